// docs/unit_scaling.md's op table must list exactly the library's ops, with their inputs.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "unitscale/ops/registry.hpp"

namespace unitscale {
namespace {

// op name -> inputs column, from the rows "| `name` | inputs | ..." of the op table.
std::map<std::string, std::string> documented_ops() {
  std::ifstream doc(std::filesystem::path(UNITSCALE_SOURCE_DIR) / "docs" / "unit_scaling.md");
  EXPECT_TRUE(doc.good()) << "cannot read docs/unit_scaling.md";
  std::map<std::string, std::string> ops;
  bool in_table = false;
  for (std::string line; std::getline(doc, line);) {
    if (line.starts_with("## ")) in_table = line == "## The op table";
    if (!in_table || !line.starts_with("| `")) continue;
    const auto name_end = line.find('`', 3);
    const auto inputs_begin = line.find("| ", name_end) + 2;
    const auto inputs_end = line.find(" |", inputs_begin);
    ops[line.substr(3, name_end - 3)] = line.substr(inputs_begin, inputs_end - inputs_begin);
  }
  return ops;
}

TEST(UnitScalingDoc, OpTableMatchesTheRegistry) {
  auto documented = documented_ops();
  for (const OpDef* op : forward_ops()) {
    const auto row = documented.find(std::string(op->name));
    if (row == documented.end()) {
      ADD_FAILURE() << "op " << op->name << " is missing from the table in docs/unit_scaling.md";
      continue;
    }
    std::string inputs;
    for (const auto input : op->inputs) inputs += (inputs.empty() ? "" : ", ") + std::string(input);
    EXPECT_EQ(row->second, inputs) << "inputs of " << op->name;
    documented.erase(row);
  }
  for (const auto& [name, inputs] : documented) ADD_FAILURE() << "docs list an op the library lacks: " << name;
}

TEST(UnitScalingDoc, OpsCanBeFoundByName) {
  EXPECT_EQ(&op_by_name("linear_readout"), forward_ops()[2]);
  EXPECT_THROW(op_by_name("hardtanh"), std::runtime_error);
}

}  // namespace
}  // namespace unitscale
