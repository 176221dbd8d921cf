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

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

using WideT = std::remove_reference_t<decltype(top->mem_wdata)>;
constexpr size_t MEMB = WideT::Words * 4;     // bytes per DRAM transfer (max(32, 4L))

[[noreturn]] void die(const char* msg) {
  std::fprintf(stderr, "sdac_port: %s\n", msg);
  std::exit(3);
}

// One clock cycle. The DRAM model samples the request before the rising edge (as the SV testbench's
// always_ff does) and answers reads on mem_rdata after it: one cycle of latency.
void tick() {
  top->clk = 0;
  top->eval();
  const bool req = top->mem_req, we = top->mem_we;
  const uint64_t addr = top->mem_addr;
  const size_t len = top->mem_len;
  uint8_t wdata[MEMB];
  if (req && we) std::memcpy(wdata, top->mem_wdata.m_storage, MEMB);
  top->clk = 1;
  top->eval();
  if (req) {
    if (we) {
      for (size_t b = 0; b < MEMB && b < len; b++)
        if (addr + b < mem.size()) mem[addr + b] = wdata[b];
    } else {
      uint8_t rdata[MEMB];
      for (size_t b = 0; b < MEMB; b++)
        rdata[b] = (b < len && addr + b < mem.size()) ? mem[addr + b] : 0;
      std::memcpy(top->mem_rdata.m_storage, rdata, MEMB);
      top->eval();
    }
  }
  cycle++;
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

  ctx = new VerilatedContext;
  top = new Vsdac_top{ctx};
  top->clk = 0;
  top->s_awvalid = top->s_wvalid = top->s_bready = top->s_arvalid = top->s_rready = 0;
  top->s_awaddr = top->s_araddr = 0;
  top->s_wdata = 0;
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
