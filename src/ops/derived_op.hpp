#pragma once
// Private: the cache behind the ops derived from other ops (backward_of, scaled_of). A derived
// OpDef's names are string_views, so it keeps the strings they point into beside it; each is made
// once per source op and lives for the program's life, so references to it stay valid.

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "unitscale/ops/op_def.hpp"

namespace unitscale::detail {

struct DerivedOp {
  std::deque<std::string> names;  // a deque never moves its elements
  OpDef op;
  std::string_view keep(std::string text) { return names.emplace_back(std::move(text)); }
};

// The op `derive(source, derived)` makes from `source`, made on first use (thread-safe). Each
// derivation (each Derive function) has a cache of its own.
template <void (*Derive)(const OpDef&, DerivedOp&)>
const OpDef& derived_op(const OpDef& source) {
  static std::mutex mutex;
  static std::map<const OpDef*, std::unique_ptr<DerivedOp>> derived;
  const std::lock_guard lock(mutex);
  std::unique_ptr<DerivedOp>& slot = derived[&source];
  if (!slot) {
    slot = std::make_unique<DerivedOp>();
    Derive(source, *slot);
  }
  return slot->op;
}

}  // namespace unitscale::detail
