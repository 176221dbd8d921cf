// Instruction prefetch: reads the program over the AXI read channel in bursts of up to BURST words
// (32 bytes each) into a FIFO of DEPTH words, so the decoder can take one word per cycle while the
// next bursts are in flight.
//
// A burst is requested while the FIFO has room for it (words held + words in flight + burst <=
// DEPTH); it never passes the end of the program (INSTR_COUNT) or a 4 KiB page boundary (a word
// that straddles one, with an unaligned INSTR_BASE, goes alone). Words arrive in order with their
// error response bit; the top reports an error when it reaches that word, so an error past HALT or
// past the words the program runs is never reported. `clear` (reset / START) empties the FIFO; the
// read engine discards the beats still in flight.
module sdac_fetch
  import sdac_isa_pkg::*;
#(
  parameter int DEPTH = 8,                 // words, a power of two >= BURST
  parameter int BURST = 4                  // words per burst, 1..DEPTH
) (
  input  logic                 clk,
  input  logic                 clear,
  input  logic                 enable,     // running and not halted: request more
  input  logic [31:0]          instr_base,
  input  logic [31:0]          instr_count,
  // AR request
  output logic                 req,
  output logic [63:0]          addr,
  output logic [7:0]           len,        // beats - 1
  input  logic                 gnt,
  // R beats
  input  logic                 beat,
  input  logic [WORD_BITS-1:0] beat_word,
  input  logic                 beat_err,
  // the next word of the program
  output logic                 head_valid,
  output logic [WORD_BITS-1:0] head_word,
  output logic                 head_err,
  input  logic                 pop
);
  localparam int PW = $clog2(DEPTH);
  logic [WORD_BITS-1:0] words [DEPTH];
  logic errs [DEPTH];
  logic [PW-1:0] head, tail;
  logic [PW:0] held, inflight;
  logic [31:0] fpc;                        // next word to request
  logic [31:0] n;                          // words in the next burst
  logic [12:0] page_left;

  always_comb begin
    addr = 64'(instr_base) + (64'(fpc) << 5);
    page_left = 13'd4096 - 13'(addr[11:0]);
    n = 32'(BURST);
    if (instr_count - fpc < n) n = instr_count - fpc;
    if (32'(page_left >> 5) < n) n = 32'(page_left >> 5);
    if (n == '0) n = 32'd1;                // a word across the page boundary
    len = 8'(n - 32'd1);
    req = enable && fpc < instr_count && 32'(held) + 32'(inflight) + n <= 32'(DEPTH);
  end
  assign head_valid = held != '0;
  assign head_word = words[head];
  assign head_err = errs[head];

  always_ff @(posedge clk) begin
    if (gnt) fpc <= fpc + n;
    if (beat) begin
      words[tail] <= beat_word;
      errs[tail] <= beat_err;
      tail <= tail + 1'b1;
    end
    if (pop) head <= head + 1'b1;
    held <= held + (PW+1)'(beat) - (PW+1)'(pop);
    inflight <= inflight + (gnt ? (PW+1)'(n) : '0) - (PW+1)'(beat);
    if (clear) begin
      fpc <= '0;
      head <= '0;
      tail <= '0;
      held <= '0;
      inflight <= '0;
    end
  end
endmodule
