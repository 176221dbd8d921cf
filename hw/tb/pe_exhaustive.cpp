// Exhaustive check of one PE (sdac_pe) against plain multiplication.
//
// Phase 1 drives every (a0, a1, w0, w1) in int8^2 x int4^2 (2^24 cycles), one
// combination per cycle with clr=1, and compares all four accumulators
// (= a_i * w_j of that cycle) when acc_valid says they were written.
// Phase 1b covers every input combination of each DSP with 5-bit weights
// (-16..15): cycle t pairs low nibbles (t & 15, t >> 4) with high nibbles
// (t & 15) - 8, (t >> 4) - 8, so 256 activation pairs x 1024 weight pairs reach
// all (n0, n1, w0, w1) of both slices. With argument "full5" it instead drives
// all 2^26 (a0, a1, w0, w1) with 5-bit weights.
// Phase 2 accumulates random sequences (en toggling, clr at the start of each
// sum) and compares the 32-bit sums.
// Prints "mismatches N" and up to 10 examples; exit status 1 on any mismatch.
// Usage: Vsdac_pe [n_random_sums] [seed] [full5]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <random>
#include <array>
#include <string>
#include "verilated.h"
#include "Vsdac_pe.h"

struct In { int a0, a1, w0, w1; bool en, clr; };

int main(int argc, char** argv) {
  const long n_sums = argc > 1 ? atol(argv[1]) : 20000;
  const unsigned seed = argc > 2 ? (unsigned)atol(argv[2]) : 1;
  const bool full5 = argc > 3 && std::string(argv[3]) == "full5";
  auto ctx = std::make_unique<VerilatedContext>();
  auto pe = std::make_unique<Vsdac_pe>(ctx.get());
  long mismatches = 0, cycles = 0, checked = 0;
  auto tick = [&]() {
    pe->clk = 0; pe->eval();
    pe->clk = 1; pe->eval();
    ++cycles;
  };
  pe->rst = 1; pe->en = 0; pe->clr = 0;
  for (int i = 0; i < 8; ++i) tick();
  pe->rst = 0;

  // Reference model of the accumulators, fed in order of acc_valid events.
  std::deque<In> pending;            // operands given with en=1, not yet seen at the output
  std::array<int64_t, 4> ref = {0, 0, 0, 0};
  auto drive = [&](const In& in) {
    pe->a0 = (uint8_t)in.a0; pe->a1 = (uint8_t)in.a1;
    pe->w0 = in.w0 & 31; pe->w1 = in.w1 & 31;
    pe->en = in.en; pe->clr = in.clr;
    if (in.en) pending.push_back(in);
    tick();
    if (pe->acc_valid) {
      if (pending.empty()) { ++mismatches; printf("acc_valid without operands at cycle %ld\n", cycles); return; }
      In o = pending.front(); pending.pop_front();
      int64_t p[4] = {(int64_t)o.a0 * o.w0, (int64_t)o.a0 * o.w1, (int64_t)o.a1 * o.w0, (int64_t)o.a1 * o.w1};
      for (int k = 0; k < 4; ++k) ref[k] = (o.clr ? 0 : ref[k]) + p[k];
      int32_t got[4] = {(int32_t)pe->acc00, (int32_t)pe->acc01, (int32_t)pe->acc10, (int32_t)pe->acc11};
      ++checked;
      for (int k = 0; k < 4; ++k) {
        if ((int32_t)ref[k] != got[k]) {
          if (mismatches < 10)
            printf("MISMATCH slot a%d*w%d a0=%d a1=%d w0=%d w1=%d clr=%d got=%d want=%lld\n",
                   k >> 1, k & 1, o.a0, o.a1, o.w0, o.w1, (int)o.clr, got[k], (long long)ref[k]);
          ++mismatches;
        }
      }
    }
  };

  // Phase 1: every combination, one product per cycle.
  for (int w1 = -8; w1 < 8; ++w1)
    for (int w0 = -8; w0 < 8; ++w0)
      for (int a1 = -128; a1 < 128; ++a1)
        for (int a0 = -128; a0 < 128; ++a0)
          drive(In{a0, a1, w0, w1, true, true});
  for (int i = 0; i < 10; ++i) drive(In{0, 0, 0, 0, false, false});   // drain
  const long exhaustive = checked;

  // Phase 1b: 5-bit weights.
  if (full5) {
    for (int w1 = -16; w1 < 16; ++w1)
      for (int w0 = -16; w0 < 16; ++w0)
        for (int a1 = -128; a1 < 128; ++a1)
          for (int a0 = -128; a0 < 128; ++a0)
            drive(In{a0, a1, w0, w1, true, true});
  } else {
    for (int w1 = -16; w1 < 16; ++w1)
      for (int w0 = -16; w0 < 16; ++w0)
        for (int t = 0; t < 256; ++t) {
          int l0 = t & 15, l1 = t >> 4, h0 = l0 - 8, h1 = l1 - 8;
          drive(In{16 * h0 + l0, 16 * h1 + l1, w0, w1, true, true});
        }
  }
  for (int i = 0; i < 10; ++i) drive(In{0, 0, 0, 0, false, false});
  const long five_bit = checked - exhaustive;

  // Phase 2: random sums with bubbles.
  std::mt19937 rng(seed);
  for (long s = 0; s < n_sums; ++s) {
    int len = 1 + rng() % 64;
    for (int i = 0; i < len; ++i) {
      In in{(int)(rng() % 256) - 128, (int)(rng() % 256) - 128, (int)(rng() % 32) - 16,
            (int)(rng() % 32) - 16, true, i == 0};
      if (rng() % 5 == 0) drive(In{0, 0, 0, 0, false, false});   // bubble
      drive(in);
    }
  }
  for (int i = 0; i < 10; ++i) drive(In{0, 0, 0, 0, false, false});
  if (!pending.empty()) { printf("%zu operand sets never reached the accumulators\n", pending.size()); ++mismatches; }
  printf("exhaustive_combinations %ld\n", exhaustive);
  printf("five_bit_combinations %ld\n", five_bit);
  printf("checked_outputs %ld\n", checked);
  printf("cycles %ld\n", cycles);
  printf("mismatches %ld\n", mismatches);
  pe->final();
  return mismatches ? 1 : 0;
}
