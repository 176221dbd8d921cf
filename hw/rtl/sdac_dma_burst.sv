// Burst former of the 3-D strided DMA: walks the lines of a load / store (sdac_dma_agu) and merges
// lines that are contiguous in DRAM into AXI INCR bursts.
//
// A burst is `len + 1` lines of `line_bytes` bytes each, beat i at addr + i * line_bytes. Lines join
// the open burst while they start where it ends, it has at most MAXB beats, and its bytes stay inside
// one 4 KiB page (AXI forbids bursts crossing 4 KiB; a single line that straddles a page boundary is
// still sent as one beat). Rows and planes that are contiguous in DRAM (dy = run * B, and then
// dz = ny * run * B) are folded into one run when the walk starts; in one cycle the walker then
// takes as many lines of the current run as fit (min(lines left in the run, MAXB - beats)) when
// they stay in the page, else one line.
//
// A burst's length must be known before it is issued, so the open burst is offered (valid) in the
// first cycle nothing joins it; the walker then goes on with the next burst while the offered one
// waits for `ready`. A run of MAXB lines or more thus costs two cycles per burst (take, offer), well
// under the MAXB cycles of its data. `idle` is high when every burst has been taken.
module sdac_dma_burst #(
  parameter int MAXB = 16                  // beats per burst, 1..256
) (
  input  logic        clk,
  input  logic        clear,               // abandon the walk (reset / START)
  input  logic        start,               // load the walk (the fields below)
  input  logic [63:0] dram,
  input  logic [15:0] run,
  input  logic [15:0] ny,
  input  logic [31:0] dy,
  input  logic [15:0] nz,
  input  logic [31:0] dz,
  input  logic [7:0]  line_bytes,
  output logic        valid,
  input  logic        ready,
  output logic [63:0] addr,
  output logic [7:0]  len,                 // beats - 1 (AxLEN)
  output logic        idle
);
  logic have;                              // the AGU holds a line not yet taken
  logic [8:0] n;                           // lines in the open burst (0: none)
  logic [63:0] b_addr, b_end;              // the open burst: first byte, one past its last byte
  logic [63:0] l_addr, base, end_k, end_1;
  /* verilator lint_off UNUSEDSIGNAL */
  logic l_last;                            // the walk's end is final_run and left instead
  logic [63:0] l_line;                     // the AGU's buffer line: the DMA unit walks its own
  /* verilator lint_on UNUSEDSIGNAL */
  localparam int RW = 48;                 // run * ny * nz lines
  logic [RW-1:0] left, k, cnt, run_f;
  logic [15:0] ny_f, nz_f;
  logic rows_c, planes_c;
  logic final_run, done, cont, fits_k, fits_1, take, emit;

  // fold contiguous rows / planes into the run (only DRAM addresses matter here)
  always_comb begin
    rows_c = ny == 16'd1 || 64'(dy) == 64'(run) * 64'(line_bytes);
    planes_c = rows_c && (nz == 16'd1 || 64'(dz) == 64'(ny) * 64'(run) * 64'(line_bytes));
    run_f = planes_c ? RW'(run) * RW'(ny) * RW'(nz) : rows_c ? RW'(run) * RW'(ny) : RW'(run);
    ny_f = rows_c ? 16'd1 : ny;
    nz_f = planes_c ? 16'd1 : nz;
  end

  sdac_dma_agu #(.RW(RW)) u_agu (
    .clk, .start, .next(take && !done), .count(cnt), .dram, .run(run_f), .ny(ny_f), .dy, .nz(nz_f), .dz,
    .sram('0), .sy('0), .sz('0), .line_bytes, .addr(l_addr), .line(l_line), .last(l_last), .final_run,
    .left(left)
  );

  always_comb begin
    k = RW'(MAXB) - RW'(n);
    if (left < k) k = left;
    base = n == '0 ? l_addr : b_addr;
    end_k = l_addr + 64'(k) * 64'(line_bytes);
    end_1 = l_addr + 64'(line_bytes);
    cont = n == '0 || l_addr == b_end;
    fits_k = (end_k - 64'd1) >> 12 == base >> 12;
    fits_1 = n == '0 || (end_1 - 64'd1) >> 12 == base >> 12;
    take = have && n < 9'(MAXB) && cont && (fits_k || fits_1);
    cnt = fits_k ? k : RW'(1);
    done = final_run && cnt == left;       // this take ends the walk
    emit = !take && n != '0 && (!valid || ready);
  end

  always_ff @(posedge clk) begin
    if (valid && ready) valid <= 1'b0;
    if (emit) begin
      valid <= 1'b1;
      addr <= b_addr;
      len <= 8'(n - 9'd1);
      n <= '0;
    end
    if (take) begin
      n <= n + 9'(cnt);
      if (n == '0) b_addr <= l_addr;
      b_end <= fits_k ? end_k : end_1;
      if (done) have <= 1'b0;
    end
    if (start) have <= 1'b1;
    if (clear) begin
      have <= 1'b0;
      n <= '0;
      valid <= 1'b0;
    end
  end
  assign idle = !have && n == '0 && !valid;
endmodule
