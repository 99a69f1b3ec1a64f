#pragma once
// The training layer: the Trainer and its tasks (a byte-level language model, an image
// classifier), checkpoints, metrics, progress, the command-line parser of the training programs,
// the environment recorded beside results, learning-rate sweeps and the coord check.

#include "unitscale/train/checkpoint.hpp"
#include "unitscale/train/command_line.hpp"
#include "unitscale/train/coord_check.hpp"
#include "unitscale/train/image_classifier.hpp"
#include "unitscale/train/language_model.hpp"
#include "unitscale/train/lr_sweep.hpp"
#include "unitscale/train/metrics_log.hpp"
#include "unitscale/train/precision.hpp"
#include "unitscale/train/progress.hpp"
#include "unitscale/train/run_environment.hpp"
#include "unitscale/train/trainer.hpp"
