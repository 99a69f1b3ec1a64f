#pragma once
// The io layer: the datasets the experiments train on (the byte-level text corpus and its
// windows, IDX image datasets such as Fashion-MNIST).

#include "unitscale/io/idx.hpp"
#include "unitscale/io/text_corpus.hpp"
