#pragma once
// A tiny u-μP byte decoder and the periodic text it learns within a few dozen steps: the training
// tests' shared model, small enough for a run of a dozen steps to take milliseconds.

#include <cstddef>
#include <cstdint>
#include <string>

#include "unitscale/io/text_corpus.hpp"
#include "unitscale/train/language_model.hpp"

namespace unitscale::testing_support {

// "0123456789\n" repeated: `train_bytes` of training text, and `validation_bytes` of validation
// text starting three bytes into the period.
inline TextCorpus periodic_corpus(std::size_t train_bytes = 4000,
                                  std::size_t validation_bytes = 400) {
  const std::string period = "0123456789\n";
  TextCorpus corpus;
  for (std::size_t i = 0; i < train_bytes; ++i) corpus.train += period[i % period.size()];
  for (std::size_t i = 0; i < validation_bytes; ++i) {
    corpus.validation += period[(i + 3) % period.size()];
  }
  corpus.text = corpus.train + corpus.validation;
  corpus.entries = 2;
  return corpus;
}

// Width 32, one block, heads of 16, sequences of 16, batch 4, η = 0.5, 2 warmup steps.
inline LanguageModelConfig tiny_decoder_config(std::int64_t steps) {
  return {.scheme = Scheme::kUMuP,
          .width = 32,
          .depth = 1,
          .head_dim = 16,
          .sequence_length = 16,
          .batch = 4,
          .seed = 7,
          .lr = 0.5,
          .steps = steps,
          .warmup = 2};
}

}  // namespace unitscale::testing_support
