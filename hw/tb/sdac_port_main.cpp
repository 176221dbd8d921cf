// Interactive register port on the RTL: sdac_top + a DRAM model, driven from a command pipe.
//
// The host side is sdac.hw.cosim.RtlPort (the RegisterPort of runtime/board.py). Unlike the batch
// testbench (hw/tb/sdac_tb_top.sv), this harness decides nothing: every CSR access comes from the
// pipe and is a real AXI-Lite transaction on sdac_top's slave port (a few clock cycles each), and
// DRAM is written and read by the host through a backdoor, as the PS writes a contiguous buffer.
//
// Clock: while a run is in flight (a CTRL write with the START bit, until irq_done rises) the
// clock runs in the background and the pipe is checked every POLL_CYCLES cycles, as a board's
// accelerator runs while the host sleeps between STATUS polls. Otherwise the simulation waits
// for the next command (an idle accelerator has nothing to do; CYCLES counts START to DONE only).
//
// Arguments: --mem-bytes N  --ctrl OFFSET  --start MASK  [--max-run-cycles N (0: no limit)]
//            [--axi-lat N (>= 1)] [--axi-stall PERCENT] [--axi-seed S] [--axi-err-lo A --axi-err-hi B]
//            (the AXI4 DRAM slave below: latency, random backpressure, SLVERR range)
// Protocol (little-endian; stdin commands, stdout replies; $display output goes to stderr):
//   command = op:u8 a:u64 b:u64 [payload]          reply = value:u64 [payload]
//   1 WRITE32  a=offset b=value                    -> cycle after the B handshake
//   2 READ32   a=offset                            -> the R data
//   3 DRAM_WR  a=addr b=n, n bytes follow          -> 0 (1: outside the DRAM model, nothing written)
//   4 DRAM_RD  a=addr b=n                          -> 0 + n bytes (1 and no bytes: outside)
//   5 IDLE     a=cycles                            -> cycle
//   6 IRQ                                          -> irq_done (0/1)
//   7 WAITIRQ  a=max cycles (0: none) b=max ms     -> 1 if irq_done is high, 0 on a limit or when no
//                                                    run is in flight (the line would never rise)
//   8 CYCLE                                        -> cycles since the start of the simulation
//   9 RESET    (rst for 4 cycles: the PL reset)    -> cycle
//  10 CLOSE                                        -> 0, then exit
// End of input also exits.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "Vsdac_top.h"
#include "verilated.h"

namespace {

constexpr int POLL_CYCLES = 64;

VerilatedContext* ctx;
Vsdac_top* top;
std::vector<uint8_t> mem;
uint64_t cycle = 0;
int out_fd = 1;
bool running = false;
uint64_t run_cycles = 0, max_run_cycles = 0;
uint32_t ctrl_offset = 0, start_mask = 1;

using WideT = std::remove_reference_t<decltype(top->m_axi_wdata)>;
constexpr size_t MEMB = WideT::Words * 4;     // bytes per AXI beat (max(32, 4L))

[[noreturn]] void die(const char* msg) {
  std::fprintf(stderr, "sdac_port: %s\n", msg);
  std::exit(3);
}

// ------------------------------------------------------------ AXI4 slave: the DRAM model
// The same model as hw/tb/sdac_tb_top.sv: INCR bursts, beat i = the AxUSER bytes at AxADDR + i * AxUSER;
// the first R beat axi_lat cycles after the AR handshake, B axi_lat cycles after the last W beat;
// with axi_stall = P each channel's handshake is withheld in P % of the cycles (xorshift64, seeded);
// DECERR for bytes past the model's memory, SLVERR for bytes in [err_lo, err_hi).
struct Burst {
  uint64_t addr, at;
  uint32_t beats, bytes;
};
struct Bresp {
  uint64_t at;
  uint8_t resp;
};
struct AxiSlave {
  uint64_t lat = 1, stall = 0, rng = 0x9E3779B97F4A7C15ull, err_lo = 0, err_hi = 0;
  std::deque<Burst> ar, aw;
  std::deque<Bresp> b;
  uint32_t r_beat = 0, w_beat = 0;
  uint8_t w_resp = 0;
  // registered outputs
  bool arready = false, awready = false, wready = false, rvalid = false, rlast = false, bvalid = false;
  uint8_t rresp = 0, bresp = 0;
  uint8_t rdata[MEMB] = {};

  bool go() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return stall == 0 || rng % 100 >= stall;
  }
  uint8_t resp_of(uint64_t a, uint64_t n) const {
    if (a + n > mem.size()) return 3;
    if (a < err_hi && a + n > err_lo) return 2;
    return 0;
  }
  void reset() {
    ar.clear(); aw.clear(); b.clear();
    r_beat = w_beat = 0; w_resp = 0;
    arready = awready = wready = rvalid = bvalid = false;
  }
  void drive() const {
    top->m_axi_arready = arready;
    top->m_axi_awready = awready;
    top->m_axi_wready = wready;
    top->m_axi_rvalid = rvalid;
    top->m_axi_rlast = rlast;
    top->m_axi_rresp = rresp;
    std::memcpy(top->m_axi_rdata.m_storage, rdata, MEMB);
    top->m_axi_bvalid = bvalid;
    top->m_axi_bresp = bresp;
  }
};
AxiSlave axi;
constexpr size_t QD = 16;

// The master keeps to the burst rules: INCR, 1..MEMB bytes per beat, inside one 4 KiB page unless the
// burst is a single beat (the beat count limit is sdac_top's BURST_MAX, checked by the SV testbench).
void check_burst(const char* ch, const Burst& b, unsigned burst) {
  if (burst != 1 || b.bytes == 0 || b.bytes > MEMB ||
      (b.beats > 1 && (b.addr >> 12) != ((b.addr + uint64_t(b.beats) * b.bytes - 1) >> 12))) {
    std::fprintf(stderr, "sdac_port: AXI %s burst addr=%llu beats=%u bytes=%u breaks the burst rules\n", ch,
                 static_cast<unsigned long long>(b.addr), b.beats, b.bytes);
    std::exit(3);
  }
}

// 32-bit word i of WSTRB (MEMB bits: a plain integer up to 64 bits, a VlWide above)
template <class T>
uint32_t strb_word(const T& v, size_t i) {
  if constexpr (std::is_integral_v<T>) return static_cast<uint32_t>(static_cast<uint64_t>(v) >> (32 * i));
  else return v.m_storage[i];
}

// One clock cycle. The slave samples the master's outputs before the rising edge (as the SV
// testbench's always block does), updates its state after it and drives its new outputs.
void tick() {
  top->clk = 0;
  top->eval();
  const bool rst = top->rst;
  const bool ar_fire = top->m_axi_arvalid && axi.arready, r_fire = axi.rvalid && top->m_axi_rready;
  const bool aw_fire = top->m_axi_awvalid && axi.awready, w_fire = top->m_axi_wvalid && axi.wready;
  const bool b_fire = axi.bvalid && top->m_axi_bready;
  Burst arb{top->m_axi_araddr, 0, top->m_axi_arlen + 1u, top->m_axi_aruser};
  const Burst awb{top->m_axi_awaddr, 0, top->m_axi_awlen + 1u, top->m_axi_awuser};
  uint8_t wdata[MEMB];
  uint8_t wstrb[MEMB];
  const bool wlast = top->m_axi_wlast;
  const unsigned arburst = top->m_axi_arburst, awburst = top->m_axi_awburst;
  if (w_fire) {
    std::memcpy(wdata, top->m_axi_wdata.m_storage, MEMB);
    for (size_t i = 0; i < MEMB; i++) wstrb[i] = (strb_word(top->m_axi_wstrb, i / 32) >> (i % 32)) & 1;
  }
  top->clk = 1;
  top->eval();
  cycle++;
  if (rst) {
    axi.reset();
  } else {
    if (ar_fire) {      // due axi_lat cycles after this edge, counted as the SV testbench counts them
      check_burst("AR", arb, arburst);
      arb.at = cycle + axi.lat;
      axi.ar.push_back(arb);
    }
    if (r_fire) axi.rvalid = false;
    if (!axi.rvalid && !axi.ar.empty() && cycle >= axi.ar.front().at && axi.go()) {
      const Burst& h = axi.ar.front();
      const uint64_t a = h.addr + uint64_t(axi.r_beat) * h.bytes;
      axi.rresp = axi.resp_of(a, h.bytes);
      for (size_t i = 0; i < MEMB; i++) axi.rdata[i] = (axi.rresp == 0 && i < h.bytes) ? mem[a + i] : 0;
      axi.rvalid = true;
      axi.rlast = axi.r_beat + 1 == h.beats;
      if (axi.rlast) { axi.r_beat = 0; axi.ar.pop_front(); } else axi.r_beat++;
    }
    if (aw_fire) { check_burst("AW", awb, awburst); axi.aw.push_back(awb); }
    if (w_fire) {
      if (axi.aw.empty()) die("AXI: W beat without a burst");
      const Burst& h = axi.aw.front();
      const uint64_t a = h.addr + uint64_t(axi.w_beat) * h.bytes;
      const uint8_t resp = axi.resp_of(a, h.bytes);
      if (resp == 0)
        for (size_t i = 0; i < MEMB; i++) if (wstrb[i]) mem[a + i] = wdata[i];
      if (resp > axi.w_resp) axi.w_resp = resp;
      if (wlast != (axi.w_beat + 1 == h.beats)) die("AXI: WLAST does not match AWLEN");
      if (wlast) {
        axi.b.push_back({cycle + axi.lat, axi.w_resp});
        axi.w_beat = 0; axi.w_resp = 0; axi.aw.pop_front();
      } else axi.w_beat++;
    }
    if (b_fire) axi.bvalid = false;
    if (!axi.bvalid && !axi.b.empty() && cycle >= axi.b.front().at && axi.go()) {
      axi.bresp = axi.b.front().resp;
      axi.bvalid = true;
      axi.b.pop_front();
    }
    axi.arready = axi.ar.size() + 1 < QD && axi.go();
    axi.awready = axi.aw.size() + 1 < QD && axi.aw.size() + axi.b.size() + 1 < QD && axi.go();
    axi.wready = !axi.aw.empty() && axi.go();
  }
  axi.drive();
  top->eval();
  ctx->timeInc(1);
  if (running) {
    run_cycles++;
    if (top->irq_done) running = false;
    else if (max_run_cycles && run_cycles >= max_run_cycles) running = false;   // a hang: the host times out
  }
}

// AXI-Lite write, the same handshakes as sdac_tb_top.sv's axil_write.
void axil_write(uint32_t addr, uint32_t data) {
  top->s_awaddr = addr;
  top->s_awvalid = 1;
  top->s_wdata = data;
  top->s_wvalid = 1;
  top->s_bready = 1;
  top->eval();
  while (top->s_awvalid || top->s_wvalid) {
    const bool aw_fire = top->s_awvalid && top->s_awready;
    const bool w_fire = top->s_wvalid && top->s_wready;
    tick();
    if (aw_fire) top->s_awvalid = 0;
    if (w_fire) top->s_wvalid = 0;
    top->eval();
  }
  while (!top->s_bvalid) tick();
  tick();                                   // the B handshake
  top->s_bready = 0;
  top->eval();
}

uint32_t axil_read(uint32_t addr) {
  top->s_araddr = addr;
  top->s_arvalid = 1;
  top->s_rready = 1;
  top->eval();
  while (!top->s_arready) tick();
  tick();                                   // the AR handshake
  top->s_arvalid = 0;
  top->eval();
  while (!top->s_rvalid) tick();
  const uint32_t data = top->s_rdata;
  tick();                                   // the R handshake
  top->s_rready = 0;
  top->eval();
  return data;
}

void reset() {
  top->rst = 1;
  for (int i = 0; i < 4; i++) tick();
  top->rst = 0;
  top->eval();
  running = false;
}

void read_exact(void* p, size_t n) {
  auto* c = static_cast<uint8_t*>(p);
  while (n) {
    const ssize_t r = ::read(0, c, n);
    if (r == 0) std::exit(0);              // the host went away
    if (r < 0) die("read from the command pipe failed");
    c += r;
    n -= static_cast<size_t>(r);
  }
}

void write_exact(const void* p, size_t n) {
  auto* c = static_cast<const uint8_t*>(p);
  while (n) {
    const ssize_t r = ::write(out_fd, c, n);
    if (r <= 0) std::exit(0);
    c += r;
    n -= static_cast<size_t>(r);
  }
}

void reply(uint64_t v) { write_exact(&v, 8); }

bool command_waiting() {
  pollfd p{0, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;             // input, or the pipe closed (read then sees the end)
}

bool in_mem(uint64_t addr, uint64_t n) { return addr <= mem.size() && n <= mem.size() - addr; }

uint64_t arg(int argc, char** argv, const char* name, uint64_t dflt) {
  for (int i = 1; i + 1 < argc; i++)
    if (std::strcmp(argv[i], name) == 0) return std::strtoull(argv[i + 1], nullptr, 0);
  return dflt;
}

}  // namespace

int main(int argc, char** argv) {
  // Replies go to the original stdout; anything the simulation prints goes to stderr.
  out_fd = ::dup(1);
  if (out_fd < 0 || ::dup2(2, 1) < 0) die("cannot set up the reply pipe");
  mem.assign(arg(argc, argv, "--mem-bytes", 1 << 20), 0);
  ctrl_offset = static_cast<uint32_t>(arg(argc, argv, "--ctrl", 0));
  start_mask = static_cast<uint32_t>(arg(argc, argv, "--start", 1));
  max_run_cycles = arg(argc, argv, "--max-run-cycles", 0);
  axi.lat = std::max<uint64_t>(1, arg(argc, argv, "--axi-lat", 1));
  axi.stall = arg(argc, argv, "--axi-stall", 0);
  axi.rng ^= arg(argc, argv, "--axi-seed", 0) * 0xBF58476D1CE4E5B9ull;
  axi.err_lo = arg(argc, argv, "--axi-err-lo", 0);
  axi.err_hi = arg(argc, argv, "--axi-err-hi", 0);

  ctx = new VerilatedContext;
  top = new Vsdac_top{ctx};
  top->clk = 0;
  top->s_awvalid = top->s_wvalid = top->s_bready = top->s_arvalid = top->s_rready = 0;
  top->s_awaddr = top->s_araddr = 0;
  top->s_wdata = 0;
  axi.drive();
  reset();

  std::vector<uint8_t> buf;
  for (;;) {
    while (running && !command_waiting())
      for (int i = 0; i < POLL_CYCLES && running; i++) tick();
    uint8_t op;
    uint64_t a, b;
    read_exact(&op, 1);
    read_exact(&a, 8);
    read_exact(&b, 8);
    switch (op) {
      case 1: {
        axil_write(static_cast<uint32_t>(a), static_cast<uint32_t>(b));
        if (a == ctrl_offset && (b & start_mask)) {
          // START cleared DONE by now (two edges after the write was taken); while busy it is
          // ignored and DONE is low anyway: either way the run ends when irq_done rises.
          running = !top->irq_done;
          run_cycles = 0;
        }
        reply(cycle);
        break;
      }
      case 2: reply(axil_read(static_cast<uint32_t>(a))); break;
      case 3: {
        buf.resize(b);
        read_exact(buf.data(), b);
        if (!in_mem(a, b)) { reply(1); break; }
        std::memcpy(mem.data() + a, buf.data(), b);
        reply(0);
        break;
      }
      case 4: {
        if (!in_mem(a, b)) { reply(1); break; }
        reply(0);
        write_exact(mem.data() + a, b);
        break;
      }
      case 5: for (uint64_t i = 0; i < a; i++) tick(); reply(cycle); break;
      case 6: reply(top->irq_done ? 1 : 0); break;
      case 7: {
        const auto t0 = std::chrono::steady_clock::now();
        uint64_t n = 0;
        while (!top->irq_done && running) {
          if (a && n >= a) break;
          tick();
          n++;
          if ((n & 4095) == 0 && b &&
              std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(b))
            break;
        }
        reply(top->irq_done ? 1 : 0);
        break;
      }
      case 8: reply(cycle); break;
      case 9: reset(); reply(cycle); break;
      case 10: reply(0); top->final(); return 0;
      default: die("unknown command");
    }
  }
}
