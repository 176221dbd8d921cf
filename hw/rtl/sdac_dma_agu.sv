// Address generator of the 3-D strided DMA (load / store):
//   for z < nz, y < ny, i < run:  dram + z*dz + y*dy + i*B  <->  line sram + z*sz + y*sy + i
// `start` loads the loop; addr / line then name the current line and `last` marks the final
// one; `next` advances by `count` lines (1 <= count <= left, the lines left in the current run:
// the burst former skips whole bursts). Address arithmetic is 64-bit (bounds are checked by the
// unit first). RW: width of run (the burst former folds contiguous rows and planes into one run).
module sdac_dma_agu #(
  parameter int RW = 16
) (
  input  logic        clk,
  input  logic        start,
  input  logic        next,
  input  logic [RW-1:0] count,
  input  logic [63:0] dram,
  input  logic [RW-1:0] run,
  input  logic [15:0] ny,
  input  logic [31:0] dy,
  input  logic [15:0] nz,
  input  logic [31:0] dz,
  input  logic [19:0] sram,
  input  logic [19:0] sy,
  input  logic [19:0] sz,
  input  logic [7:0]  line_bytes,
  output logic [63:0] addr,
  output logic [63:0] line,
  output logic        last,
  output logic        final_run,           // the current run is the walk's last (last = final_run && left == 1)
  output logic [RW-1:0] left
);
  logic [RW-1:0] i, run_r;
  logic [15:0] y, z, ny_r, nz_r;
  logic [63:0] dram_z, dram_zy, line_z, line_zy, dy_r, dz_r, sy_r, sz_r, b_r;

  assign left = run_r - i;
  assign final_run = (y == ny_r - 16'd1) && (z == nz_r - 16'd1);
  assign last = final_run && (i == run_r - RW'(1));

  always_ff @(posedge clk) begin
    if (start) begin
      i <= '0;
      y <= '0;
      z <= '0;
      run_r <= run;
      ny_r <= ny;
      nz_r <= nz;
      dy_r <= 64'(dy);
      dz_r <= 64'(dz);
      sy_r <= 64'(sy);
      sz_r <= 64'(sz);
      b_r <= 64'(line_bytes);
      dram_z <= dram;
      dram_zy <= dram;
      addr <= dram;
      line_z <= 64'(sram);
      line_zy <= 64'(sram);
      line <= 64'(sram);
    end else if (next) begin
      if (i + count < run_r) begin
        i <= i + count;
        addr <= addr + 64'(count) * b_r;
        line <= line + 64'(count);
      end else if (y + 16'd1 < ny_r) begin
        i <= '0;
        y <= y + 16'd1;
        dram_zy <= dram_zy + dy_r;
        line_zy <= line_zy + sy_r;
        addr <= dram_zy + dy_r;
        line <= line_zy + sy_r;
      end else begin
        i <= '0;
        y <= '0;
        z <= z + 16'd1;
        dram_z <= dram_z + dz_r;
        line_z <= line_z + sz_r;
        dram_zy <= dram_z + dz_r;
        line_zy <= line_z + sz_r;
        addr <= dram_z + dz_r;
        line <= line_z + sz_r;
      end
    end
  end
endmodule
