// Whole-program co-simulation testbench: sdac_top + a DRAM model + an AXI-Lite host.
//
// Built with `verilator --binary` (sdac.hw.sim.build_cosim) and run with plusargs:
//   +image=FILE        DRAM image, one hex byte per line ($readmemh), loaded at address 0
//   +dump=FILE         where to write the first +dump_bytes bytes of DRAM after the run
//   +dump_bytes=N
//   +dram_size=N +instr_base=A +instr_count=N +step=S     CSR values
//   +max_cycles=N      give up (prints TIMEOUT) after N cycles
// Prints one line "SDAC_RESULT status=.. error=.. index=.. executed=.. cycles=.. unsupported=.. id=..
// instr_base=.. instr_count=.. step=.. dram_size=.. ctrl=.." (the last six read back through AXI-Lite,
// so tests can check the register map against isa.toml [csr]). Offsets and bits: sdac_isa_pkg CSR_*.
// The DRAM model accepts one request per cycle and returns read data one cycle later.
module sdac_tb_top
  import sdac_isa_pkg::*;
#(
  parameter int LANES = 20,
  parameter int AX = 20,
  parameter int AY = 10,
  parameter int ACT_N = 49152,
  parameter int WGT_N = 65536,
  parameter int ACC_N = 20480,
  parameter int PRM_N = 1024,
  parameter int STAT_N = 1024,
  parameter int QDEPTH = 64,
  parameter int TOKMAX = 255,
  parameter int MEM_BYTES = 1 << 20
);
  localparam int MEMB = (4 * LANES > 32) ? 4 * LANES : 32;

  logic clk = 1'b0;
  logic rst = 1'b1;
  always #5 clk = ~clk;

  logic s_awvalid = 1'b0, s_awready, s_wvalid = 1'b0, s_wready, s_bvalid, s_bready = 1'b0;
  logic s_arvalid = 1'b0, s_arready, s_rvalid, s_rready = 1'b0;
  logic [CSR_ADDR_BITS-1:0] s_awaddr = '0, s_araddr = '0;
  logic [31:0] s_wdata = '0, s_rdata;
  logic [1:0] s_bresp, s_rresp;
  logic mem_req, mem_we, irq_done;
  logic [63:0] mem_addr;
  logic [7:0] mem_len;
  logic [MEMB*8-1:0] mem_wdata, mem_rdata;

  sdac_top #(.LANES(LANES), .AX(AX), .AY(AY), .ACT_N(ACT_N), .WGT_N(WGT_N), .ACC_N(ACC_N),
             .PRM_N(PRM_N), .STAT_N(STAT_N), .QDEPTH(QDEPTH), .TOKMAX(TOKMAX)) dut (.*);

  // DRAM model
  logic [7:0] mem [MEM_BYTES];
  always_ff @(posedge clk) begin
    if (mem_req && mem_we) begin
      for (int b = 0; b < MEMB; b++)
        if (b < int'(mem_len) && mem_addr + 64'(b) < 64'(MEM_BYTES))
          mem[mem_addr + 64'(b)] <= mem_wdata[8*b +: 8];
    end
    if (mem_req && !mem_we) begin
      for (int b = 0; b < MEMB; b++)
        mem_rdata[8*b +: 8] <= (b < int'(mem_len) && mem_addr + 64'(b) < 64'(MEM_BYTES))
                               ? mem[mem_addr + 64'(b)] : 8'd0;
    end
  end

  task automatic axil_write(input logic [CSR_ADDR_BITS-1:0] addr, input logic [31:0] data);
    logic aw_fire, w_fire;
    @(negedge clk);
    s_awaddr = addr; s_awvalid = 1'b1; s_wdata = data; s_wvalid = 1'b1; s_bready = 1'b1;
    while (s_awvalid || s_wvalid) begin
      aw_fire = s_awvalid && s_awready;
      w_fire = s_wvalid && s_wready;
      @(negedge clk);                  // the rising edge in between did the handshakes
      if (aw_fire) s_awvalid = 1'b0;
      if (w_fire) s_wvalid = 1'b0;
    end
    while (!s_bvalid) @(negedge clk);
    @(negedge clk);
    s_bready = 1'b0;
  endtask

  task automatic axil_read(input logic [CSR_ADDR_BITS-1:0] addr, output logic [31:0] data);
    @(negedge clk);
    s_araddr = addr; s_arvalid = 1'b1; s_rready = 1'b1;
    while (!s_arready) @(negedge clk);
    @(negedge clk);
    s_arvalid = 1'b0;
    while (!s_rvalid) @(negedge clk);
    data = s_rdata;
    @(negedge clk);
    s_rready = 1'b0;
  endtask

  initial begin
    string image, dump;
    int unsigned dram_size, instr_base, instr_count, step, dump_bytes;
    longint unsigned max_cycles, n;
    logic [31:0] status, error, index, executed, cyc_lo, cyc_hi, id, rb_base, rb_count, rb_step, rb_size, rb_ctrl;
    if (!$value$plusargs("image=%s", image)) image = "";
    if (!$value$plusargs("dump=%s", dump)) dump = "";
    if (!$value$plusargs("dump_bytes=%d", dump_bytes)) dump_bytes = 0;
    if (!$value$plusargs("dram_size=%d", dram_size)) dram_size = 0;
    if (!$value$plusargs("instr_base=%d", instr_base)) instr_base = 0;
    if (!$value$plusargs("instr_count=%d", instr_count)) instr_count = 0;
    if (!$value$plusargs("step=%d", step)) step = 0;
    if (!$value$plusargs("max_cycles=%d", max_cycles)) max_cycles = 10000000;
    for (int i = 0; i < MEM_BYTES; i++) mem[i] = 8'd0;
    if (image != "") $readmemh(image, mem);
    repeat (4) @(posedge clk);
    rst = 1'b0;
    axil_write(CSR_DRAM_SIZE, dram_size);
    axil_write(CSR_INSTR_BASE, instr_base);
    axil_write(CSR_INSTR_COUNT, instr_count);
    axil_write(CSR_STEP, step);
    axil_write(CSR_CTRL, 32'd1 << CSR_CTRL_START_BIT);
    n = 0;
    while (!irq_done && n < max_cycles) begin
      @(posedge clk);
      n++;
    end
    if (!irq_done) $display("TIMEOUT after %0d cycles", n);
    axil_read(CSR_STATUS, status);
    axil_read(CSR_ERROR, error);
    axil_read(CSR_ERR_INDEX, index);
    axil_read(CSR_EXECUTED, executed);
    axil_read(CSR_CYCLES_LO, cyc_lo);
    axil_read(CSR_CYCLES_HI, cyc_hi);
    axil_read(CSR_ID, id);
    axil_read(CSR_INSTR_BASE, rb_base);
    axil_read(CSR_INSTR_COUNT, rb_count);
    axil_read(CSR_STEP, rb_step);
    axil_read(CSR_DRAM_SIZE, rb_size);
    axil_read(CSR_CTRL, rb_ctrl);
    $write("SDAC_RESULT status=%0d error=%0d index=%0d executed=%0d cycles=%0d unsupported=%0d",
           status, error, index, executed, {cyc_hi, cyc_lo}, status[CSR_STATUS_UNSUPPORTED_BIT]);
    $display(" id=%0d instr_base=%0d instr_count=%0d step=%0d dram_size=%0d ctrl=%0d",
             id, rb_base, rb_count, rb_step, rb_size, rb_ctrl);
    if (dump != "" && dump_bytes > 0) $writememh(dump, mem, 0, dump_bytes - 1);
    $finish;
  end
endmodule
