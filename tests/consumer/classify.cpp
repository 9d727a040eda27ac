// classify WEIGHTS IMAGE: the top 5 classes of a photograph, then every logit (for tests/consumer_test.py).
#include <alexnet/classifier.h>

#include <cstdio>

int main(int argc, char** argv) try {
  if (argc != 3) return std::fprintf(stderr, "usage: classify WEIGHTS IMAGE\n"), 2;
  const alexnet::Classifier classifier = alexnet::Classifier::load(argv[1]);
  const torch::Tensor logits = classifier.logits(classifier.preprocess_file(argv[2]).unsqueeze(0))[0];
  for (const alexnet::Prediction& p : classifier.rank(logits, 5)) std::printf("%.4f %s\n", p.probability, p.label.c_str());
  for (int64_t i = 0; i < logits.size(0); ++i) std::printf("%s%.9g", i ? " " : "logits: ", logits[i].item<float>());
  std::printf("\n");
} catch (const alexnet::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
