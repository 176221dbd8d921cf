// Whole-program co-simulation testbench: sdac_top + a DRAM model + an AXI-Lite host.
//
// Built with `verilator --binary` (sdac.hw.sim.build_cosim) and run with plusargs:
//   +image=FILE        DRAM image, one hex byte per line ($readmemh), loaded at address 0
//   +dump=FILE         where to write the first +dump_bytes bytes of DRAM after the run
//   +dump_bytes=N
//   +dram_size=N +instr_base=A +instr_count=N +step=S     CSR values
//   +max_cycles=N      give up (prints TIMEOUT) after N cycles
//   +axi_lat=N         cycles from an AR handshake to its first R beat, from a last W beat to B (>= 1)
//   +axi_stall=P       percent of cycles each AXI channel is stalled by the slave (random, seeded)
//   +axi_seed=S        seed of those stalls
//   +axi_err_lo=A +axi_err_hi=B   answer SLVERR for bytes in [A, B) (DECERR past MEM_BYTES anyway)
// Prints one line "SDAC_RESULT status=.. error=.. index=.. executed=.. cycles=.. unsupported=.. id=..
// instr_base=.. instr_count=.. step=.. dram_size=.. ctrl=.." (the last six read back through AXI-Lite,
// so tests can check the register map against isa.toml [csr]). Offsets and bits: sdac_isa_pkg CSR_*.
// The DRAM model is an AXI4 slave with configurable latency and random backpressure (below).
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
  parameter int MEM_BYTES = 1 << 20,
  parameter int BURST_MAX = 16,
  parameter int OUTST = 4
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
  logic irq_done;
  logic m_axi_arvalid, m_axi_arready = 1'b0, m_axi_rvalid = 1'b0, m_axi_rready, m_axi_rlast = 1'b0;
  logic m_axi_awvalid, m_axi_awready = 1'b0, m_axi_wvalid, m_axi_wready = 1'b0, m_axi_wlast;
  logic m_axi_bvalid = 1'b0, m_axi_bready;
  logic [63:0] m_axi_araddr, m_axi_awaddr;
  logic [7:0] m_axi_arlen, m_axi_awlen, m_axi_aruser, m_axi_awuser;
  logic [2:0] m_axi_arsize, m_axi_awsize;
  logic [1:0] m_axi_arburst, m_axi_awburst, m_axi_rresp = 2'b00, m_axi_bresp = 2'b00;
  logic [MEMB*8-1:0] m_axi_rdata = '0, m_axi_wdata;
  logic [MEMB-1:0] m_axi_wstrb;

  sdac_top #(.LANES(LANES), .AX(AX), .AY(AY), .ACT_N(ACT_N), .WGT_N(WGT_N), .ACC_N(ACC_N),
             .PRM_N(PRM_N), .STAT_N(STAT_N), .QDEPTH(QDEPTH), .TOKMAX(TOKMAX), .BURST_MAX(BURST_MAX),
             .OUTST(OUTST)) dut (.*);

  // ------------------------------------------------------------ AXI4 slave: the DRAM model
  // Every burst is INCR; beat i of a burst is the AxUSER bytes at AxADDR + i * AxUSER (sdac_axi_rd).
  // Requests queue up (up to QD per direction); the first R beat of a burst is offered axi_lat cycles
  // after its AR handshake, the B response axi_lat cycles after the burst's last W beat. With
  // axi_stall = P (percent), every cycle each of ARREADY, AWREADY, WREADY and the offer of an R beat
  // or a B response is withheld with probability P (xorshift64 seeded by axi_seed), so the master
  // sees random backpressure on every channel. Responses: DECERR for bytes past MEM_BYTES, SLVERR for
  // bytes in [axi_err_lo, axi_err_hi) (nothing is written there; reads return 0).
  localparam int QD = 16;
  logic [7:0] mem [MEM_BYTES];
  // splitmix64 constants of the stall generator (as hw/tb/sdac_port_main.cpp)
  localparam longint unsigned RNG_SEED0 = 64'h9E3779B97F4A7C15, RNG_SEED_MUL = 64'hBF58476D1CE4E5B9;
  longint unsigned axi_lat = 1, axi_stall = 0, err_lo = 0, err_hi = 0, rng = RNG_SEED0, cyc = 0;
  longint unsigned ar_addr [QD], ar_at [QD], aw_addr [QD], b_at [QD];
  int unsigned ar_len [QD], ar_bytes [QD], aw_len [QD], aw_bytes [QD];
  logic [1:0] b_resp_q [QD];
  int unsigned ar_h = 0, ar_n = 0, r_beat = 0, aw_h = 0, aw_n = 0, w_beat = 0, b_h = 0, b_n = 0;
  logic [1:0] w_resp = 2'b00;
  // statistics: bursts, and cycles the master waited on each channel because of the slave
  longint unsigned reads = 0, writes = 0, ar_wait = 0, r_wait = 0, aw_wait = 0, w_wait = 0, b_wait = 0;

  function automatic logic go();           // 1 with probability (100 - axi_stall) %
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return axi_stall == 0 || rng % 100 >= axi_stall;
  endfunction

  function automatic logic [1:0] resp_of(longint unsigned a, longint unsigned n);
    if (a + n > longint'(MEM_BYTES)) return 2'b11;                  // DECERR
    if (a < err_hi && a + n > err_lo) return 2'b10;                 // SLVERR
    return 2'b00;
  endfunction

  // INCR, at most BURST_MAX beats (fetch: 4), and inside one 4 KiB page unless it is a single beat
  task automatic check_burst(input string ch, input logic [63:0] a, input logic [7:0] len, input logic [7:0] b,
                             input logic [1:0] burst);
    if (burst != 2'b01 || int'(len) + 1 > (BURST_MAX > 4 ? BURST_MAX : 4) || b == 0 || int'(b) > MEMB ||
        (len != 0 && (a >> 12) != ((a + 64'(int'(len) + 1) * 64'(b) - 1) >> 12))) begin
      $display("AXI ERROR: %s burst addr=%0d len=%0d bytes=%0d burst=%0d breaks the burst rules", ch, a, len, b, burst);
      $finish;
    end
  endtask

  always @(posedge clk) begin
    cyc++;
    if (rst) begin
      ar_n = 0; aw_n = 0; b_n = 0; r_beat = 0; w_beat = 0; w_resp = 2'b00;
      m_axi_arready <= 1'b0; m_axi_awready <= 1'b0; m_axi_wready <= 1'b0;
      m_axi_rvalid <= 1'b0; m_axi_bvalid <= 1'b0;
    end else begin
      if (m_axi_arvalid && !m_axi_arready) ar_wait++;
      if (m_axi_awvalid && !m_axi_awready) aw_wait++;
      if (m_axi_wvalid && !m_axi_wready) w_wait++;
      if (!m_axi_rvalid && ar_n > 0) r_wait++;     // a burst is due or on its way, no beat offered
      if (!m_axi_bvalid && b_n > 0) b_wait++;
      // AR: queue the burst (the master must keep to the burst rules)
      if (m_axi_arvalid && m_axi_arready) check_burst("AR", m_axi_araddr, m_axi_arlen, m_axi_aruser, m_axi_arburst);
      if (m_axi_awvalid && m_axi_awready) check_burst("AW", m_axi_awaddr, m_axi_awlen, m_axi_awuser, m_axi_awburst);
      if (m_axi_arvalid && m_axi_arready) begin
        int unsigned t;
        t = (ar_h + ar_n) % QD;
        ar_addr[t] = m_axi_araddr; ar_len[t] = int'(m_axi_arlen) + 1; ar_bytes[t] = int'(m_axi_aruser);
        ar_at[t] = cyc + axi_lat;
        ar_n++;
        reads++;
      end
      // R: offer the next beat of the oldest burst
      if (m_axi_rvalid && m_axi_rready) m_axi_rvalid <= 1'b0;
      if (!m_axi_rvalid || m_axi_rready) begin
        if (ar_n > 0 && cyc >= ar_at[ar_h] && go()) begin
          longint unsigned a;
          logic [1:0] resp;
          a = ar_addr[ar_h] + longint'(r_beat) * longint'(ar_bytes[ar_h]);
          resp = resp_of(a, longint'(ar_bytes[ar_h]));
          for (int b = 0; b < MEMB; b++)
            m_axi_rdata[8*b +: 8] <= (resp == 2'b00 && b < int'(ar_bytes[ar_h])) ? mem[a + 64'(b)] : 8'd0;
          m_axi_rresp <= resp;
          m_axi_rvalid <= 1'b1;
          m_axi_rlast <= r_beat + 1 == ar_len[ar_h];
          if (r_beat + 1 == ar_len[ar_h]) begin
            r_beat = 0; ar_h = (ar_h + 1) % QD; ar_n--;
          end else r_beat++;
        end
      end
      // AW: queue the burst
      if (m_axi_awvalid && m_axi_awready) begin
        int unsigned t;
        t = (aw_h + aw_n) % QD;
        aw_addr[t] = m_axi_awaddr; aw_len[t] = int'(m_axi_awlen) + 1; aw_bytes[t] = int'(m_axi_awuser);
        aw_n++;
        writes++;
      end
      // W: beats of the oldest burst (WREADY only while a burst is queued)
      if (m_axi_wvalid && m_axi_wready) begin
        longint unsigned a;
        logic [1:0] resp;
        a = aw_addr[aw_h] + longint'(w_beat) * longint'(aw_bytes[aw_h]);
        resp = resp_of(a, longint'(aw_bytes[aw_h]));
        if (resp == 2'b00)
          for (int b = 0; b < MEMB; b++)
            if (m_axi_wstrb[b]) mem[a + 64'(b)] = m_axi_wdata[8*b +: 8];
        if (resp > w_resp) w_resp = resp;
        if (m_axi_wlast != (w_beat + 1 == aw_len[aw_h])) begin
          $display("AXI ERROR: WLAST %0d at beat %0d of %0d", m_axi_wlast, w_beat, aw_len[aw_h]);
          $finish;
        end
        if (w_beat + 1 == aw_len[aw_h]) begin
          int unsigned t;
          t = (b_h + b_n) % QD;
          b_resp_q[t] = w_resp; b_at[t] = cyc + axi_lat; b_n++;
          w_beat = 0; w_resp = 2'b00; aw_h = (aw_h + 1) % QD; aw_n--;
        end else w_beat++;
      end
      // B
      if (m_axi_bvalid && m_axi_bready) m_axi_bvalid <= 1'b0;
      if ((!m_axi_bvalid || m_axi_bready) && b_n > 0 && cyc >= b_at[b_h] && go()) begin
        m_axi_bresp <= b_resp_q[b_h];
        m_axi_bvalid <= 1'b1;
        b_h = (b_h + 1) % QD; b_n--;
      end
      m_axi_arready <= ar_n + 1 < QD && go();
      m_axi_awready <= aw_n + 1 < QD && b_n + aw_n + 1 < QD && go();
      m_axi_wready <= aw_n > 0 && go();
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
    longint unsigned max_cycles, n, seed;
    logic [31:0] status, error, index, executed, cyc_lo, cyc_hi, id, rb_base, rb_count, rb_step, rb_size, rb_ctrl;
    if (!$value$plusargs("image=%s", image)) image = "";
    if (!$value$plusargs("dump=%s", dump)) dump = "";
    if (!$value$plusargs("dump_bytes=%d", dump_bytes)) dump_bytes = 0;
    if (!$value$plusargs("dram_size=%d", dram_size)) dram_size = 0;
    if (!$value$plusargs("instr_base=%d", instr_base)) instr_base = 0;
    if (!$value$plusargs("instr_count=%d", instr_count)) instr_count = 0;
    if (!$value$plusargs("step=%d", step)) step = 0;
    if (!$value$plusargs("max_cycles=%d", max_cycles)) max_cycles = 10000000;
    if (!$value$plusargs("axi_lat=%d", axi_lat)) axi_lat = 1;
    if (!$value$plusargs("axi_stall=%d", axi_stall)) axi_stall = 0;
    if ($value$plusargs("axi_seed=%d", seed)) rng = RNG_SEED0 ^ (64'(seed) * RNG_SEED_MUL);
    if (!$value$plusargs("axi_err_lo=%d", err_lo)) err_lo = 0;
    if (!$value$plusargs("axi_err_hi=%d", err_hi)) err_hi = 0;
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
    $display("SDAC_AXI read_bursts=%0d write_bursts=%0d ar_wait=%0d r_wait=%0d aw_wait=%0d w_wait=%0d b_wait=%0d",
             reads, writes, ar_wait, r_wait, aw_wait, w_wait, b_wait);
    if (dump != "" && dump_bytes > 0) $writememh(dump, mem, 0, dump_bytes - 1);
    $finish;
  end
endmodule
