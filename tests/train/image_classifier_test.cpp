// The image-classifier task on synthetic data: seeded epoch shuffles visit every image once per
// epoch, and a separable problem is learnt.

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "unitscale/nn/init.hpp"
#include "unitscale/train/image_classifier.hpp"
#include "unitscale/train/trainer.hpp"

namespace us = unitscale;

namespace {

// Two Gaussian blobs in 16 "pixels": the first 4 pixels are +1 (class 1) or −1 (class 0), the
// rest 0, plus N(0, 0.5²) noise everywhere. The class means are ‖(2, 2, 2, 2)‖ = 4 = 8σ apart, so
// the Bayes error is Φ(−4) ≈ 3e-5: a trained classifier should be almost perfect.
us::ImageClassificationData blobs(std::int64_t n_train, std::int64_t n_test) {
  us::ImageClassificationData d;
  d.classes = 2;
  d.height = 4;
  d.width = 4;
  auto fill = [](us::Tensor& x, us::Tensor& y, std::int64_t n, std::uint64_t seed) {
    x = us::Tensor(us::Shape{n, 16});
    y = us::Tensor(us::Shape{n}, us::DType::kI32);
    for (std::int64_t i = 0; i < n; ++i) {
      const int label = static_cast<int>(i % 2);
      y.data_as<std::int32_t>()[i] = label;
      for (std::int64_t p = 0; p < 16; ++p) {
        const double noise = 0.5 * us::counter_normal(seed, "blobs", static_cast<std::uint64_t>(i * 16 + p));
        x.data_as<float>()[i * 16 + p] =
            static_cast<float>((p < 4 ? (label == 1 ? 1.0 : -1.0) : 0.0) + noise);
      }
    }
  };
  fill(d.train_images, d.train_labels, n_train, 1);
  fill(d.test_images, d.test_labels, n_test, 2);
  return d;
}

TEST(ImageClassifierTask, EachEpochIsASeededPermutation) {
  const us::ImageClassificationData d = blobs(12, 4);
  // Batch 4 over 12 images: steps 1–3 are epoch 0, steps 4–6 epoch 1.
  auto epochs = [&](std::uint64_t seed) {
    us::ImageClassifierTask task({.hidden = {8}, .batch = 4, .seed = seed, .steps = 6}, d);
    std::vector<std::vector<std::int32_t>> out(2);
    for (int step = 1; step <= 6; ++step) {
      for (const std::int32_t i : task.batch_indices(step)) {
        out[static_cast<std::size_t>((step - 1) / 3)].push_back(i);
      }
    }
    return out;
  };
  const auto a = epochs(3);
  for (const auto& epoch : a) {
    EXPECT_EQ(std::set<std::int32_t>(epoch.begin(), epoch.end()).size(), 12u);
  }
  EXPECT_NE(a[0], a[1]);         // reshuffled every epoch
  EXPECT_EQ(epochs(3), a);       // a function of the seed
  EXPECT_NE(epochs(4)[0], a[0]);
}

TEST(ImageClassifierTask, LearnsSeparableBlobs) {
  const us::ImageClassificationData d = blobs(512, 200);
  us::ImageClassifierTask task({.hidden = {32}, .batch = 32, .seed = 1, .lr = 0.5, .steps = 60},
                               d);
  us::Trainer trainer(task, {.steps = 60, .progress = us::ProgressMode::kQuiet, .out = nullptr});
  const us::TrainingResult result = trainer.run();
  EXPECT_EQ(result.reason, us::StopReason::kCompleted);
  const auto test = task.evaluate_on(trainer.executor(), d.test_images, d.test_labels);
  EXPECT_GT(test.accuracy, 0.95);
  EXPECT_LT(test.loss, 0.3);
  ASSERT_TRUE(result.validation_loss.has_value());  // no validation split: the test set's
  EXPECT_NEAR(*result.validation_loss, test.loss, 1e-9);
}

}  // namespace
