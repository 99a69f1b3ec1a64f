#include "unitscale/ops/constraint.hpp"

#include <array>
#include <cmath>
#include <string>
#include <utility>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

constexpr std::array<std::pair<std::string_view, Constraint>, 8> kNames{{
    {"none", Constraint::kNone},
    {"to_output_scale", Constraint::kToOutputScale},
    {"to_grad_input_scale", Constraint::kToGradInputScale},
    {"to_left_grad_scale", Constraint::kToLeftGradScale},
    {"to_right_grad_scale", Constraint::kToRightGradScale},
    {"gmean", Constraint::kGMean},
    {"hmean", Constraint::kHMean},
    {"amean", Constraint::kAMean},
}};

void require_arity(Constraint c, const std::vector<double>& scales, std::size_t arity) {
  if (scales.size() != arity) {
    throw Error("constraint " + std::string(constraint_name(c)) + " takes exactly " +
                std::to_string(arity) + " scales, got " + std::to_string(scales.size()));
  }
}

}  // namespace

double constraint_value(Constraint c, const std::vector<double>& scales) {
  if (scales.empty()) throw Error("constraint " + std::string(constraint_name(c)) + ": no scales");
  const double n = static_cast<double>(scales.size());
  switch (c) {
    case Constraint::kNone:
      throw Error("constraint none has no single value");
    case Constraint::kToOutputScale:
      return scales[0];
    case Constraint::kToGradInputScale:
      require_arity(c, scales, 2);
      return scales[1];
    case Constraint::kToLeftGradScale:
      require_arity(c, scales, 3);
      return scales[1];
    case Constraint::kToRightGradScale:
      require_arity(c, scales, 3);
      return scales[2];
    case Constraint::kGMean: {
      double log_sum = 0;
      for (const double s : scales) log_sum += std::log(s);
      return std::exp(log_sum / n);
    }
    case Constraint::kHMean: {
      double inverse_sum = 0;
      for (const double s : scales) inverse_sum += 1.0 / s;
      return n / inverse_sum;
    }
    case Constraint::kAMean: {
      double sum = 0;
      for (const double s : scales) sum += s;
      return sum / n;
    }
  }
  throw Error("constraint: invalid enum value");
}

std::vector<double> apply_constraint(Constraint c, std::vector<double> scales) {
  if (c == Constraint::kNone) return scales;
  const double value = constraint_value(c, scales);
  for (double& s : scales) s = value;
  return scales;
}

Constraint constraint_from_name(std::string_view name) {
  for (const auto& [text, c] : kNames) {
    if (text == name) return c;
  }
  std::string valid;
  for (const auto& entry : kNames) valid += (valid.empty() ? "" : ", ") + std::string(entry.first);
  throw Error("unknown constraint '" + std::string(name) + "'; valid names: " + valid);
}

std::string_view constraint_name(Constraint c) {
  for (const auto& [text, value] : kNames) {
    if (value == c) return text;
  }
  return "invalid";
}

double log_interpolate(double a, double lo, double hi) {
  // The end points exactly: a weight of 0 must not multiply an infinite log into NaN.
  if (a == 0.0) return lo;
  if (a == 1.0) return hi;
  return std::exp(a * std::log(hi) + (1.0 - a) * std::log(lo));
}

const EnumType& EnumAttribute<Constraint>::type() {
  return enum_type<Constraint, constraint_name, constraint_from_name>("constraint");
}

}  // namespace unitscale
