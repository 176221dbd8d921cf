// Write half of sdac_top's AXI4 master: AW bursts of the store DMA (from sdac_dma_burst), the W
// beats taken from the store unit one buffer line per beat, and the B responses.
//
// AW and W are registers (held until their READY): a burst is granted (d_gnt) when AW is free and
// fewer than OUTST bursts wait for their B response; its beat count then joins a FIFO that the W
// side works through in order, loading a beat whenever W is free and the unit has a line
// (w_have; w_take tells the unit it was taken). W never runs ahead of AW. BREADY is always high;
// b_done pulses once per B response of this run, with b_err for SLVERR / DECERR.
// `flush` (START) keeps the protocol whole for bursts already granted: their remaining beats go
// out with WSTRB = 0 (nothing written) and their B responses are dropped.
//
// Beat i of a burst carries the B = AWUSER bytes at AWADDR + i * B in its low bytes (WSTRB has
// the low B bits set). AWSIZE names the bus width.
module sdac_axi_wr #(
  parameter int MEMB = 32,
  parameter int OUTST = 4                  // bursts in flight, a power of two >= 2
) (
  input  logic              clk,
  input  logic              rst,
  input  logic              flush,
  // store DMA: a burst
  input  logic              d_req,
  input  logic [63:0]       d_addr,
  input  logic [7:0]        d_len,
  input  logic [7:0]        d_bytes,
  output logic              d_gnt,
  // the unit's next line
  input  logic              w_have,
  input  logic [MEMB*8-1:0] w_data,
  output logic              w_take,
  // B responses
  output logic              b_done,
  output logic              b_err,
  // AXI4 AW / W / B
  output logic              m_axi_awvalid,
  input  logic              m_axi_awready,
  output logic [63:0]       m_axi_awaddr,
  output logic [7:0]        m_axi_awlen,
  output logic [2:0]        m_axi_awsize,
  output logic [1:0]        m_axi_awburst,
  output logic [7:0]        m_axi_awuser,
  output logic              m_axi_wvalid,
  input  logic              m_axi_wready,
  output logic [MEMB*8-1:0] m_axi_wdata,
  output logic [MEMB-1:0]   m_axi_wstrb,
  output logic              m_axi_wlast,
  input  logic              m_axi_bvalid,
  output logic              m_axi_bready,
  /* verilator lint_off UNUSEDSIGNAL */
  input  logic [1:0]        m_axi_bresp     // bit 0 (EXOKAY vs OKAY) does not matter
  /* verilator lint_on UNUSEDSIGNAL */
);
  localparam int PW = $clog2(OUTST);

  // bursts granted: beats (len), bytes per beat, discarded; W walks from w_head, B from b_head
  logic [7:0] q_len [OUTST];
  logic [7:0] q_bytes [OUTST];
  logic q_drop [OUTST];
  logic [PW-1:0] tail, w_head, b_head;
  logic [PW:0] w_count, b_count;
  logic [7:0] beat;
  logic can, load, w_last, w_drop, b_fire;

  assign can = (!m_axi_awvalid || m_axi_awready) && b_count < (PW+1)'(OUTST);
  assign d_gnt = can && d_req;
  assign w_drop = q_drop[w_head];
  assign load = (!m_axi_wvalid || m_axi_wready) && w_count != '0 && (w_drop || w_have);
  assign w_take = load && !w_drop;
  assign w_last = beat == q_len[w_head];
  assign b_fire = m_axi_bvalid && b_count != '0;
  assign b_done = b_fire && !q_drop[b_head];
  assign b_err = m_axi_bresp[1];

  assign m_axi_awsize = 3'($clog2(MEMB));
  assign m_axi_awburst = 2'b01;            // INCR
  assign m_axi_bready = 1'b1;

  always_ff @(posedge clk) begin
    if (m_axi_awvalid && m_axi_awready) m_axi_awvalid <= 1'b0;
    if (m_axi_wvalid && m_axi_wready) m_axi_wvalid <= 1'b0;
    if (d_gnt) begin
      m_axi_awvalid <= 1'b1;
      m_axi_awaddr <= d_addr;
      m_axi_awlen <= d_len;
      m_axi_awuser <= d_bytes;
      q_len[tail] <= d_len;
      q_bytes[tail] <= d_bytes;
      tail <= tail + 1'b1;
    end
    if (load) begin
      m_axi_wvalid <= 1'b1;
      m_axi_wdata <= w_drop ? '0 : w_data;
      for (int b = 0; b < MEMB; b++) m_axi_wstrb[b] <= !w_drop && b < int'(q_bytes[w_head]);
      m_axi_wlast <= w_last;
      beat <= w_last ? 8'd0 : beat + 8'd1;
      if (w_last) w_head <= w_head + 1'b1;
    end
    if (b_fire) b_head <= b_head + 1'b1;
    w_count <= w_count + (PW+1)'(d_gnt) - (PW+1)'(load && w_last);
    b_count <= b_count + (PW+1)'(d_gnt) - (PW+1)'(b_fire);
    for (int i = 0; i < OUTST; i++)
      if (flush) q_drop[i] <= 1'b1;
      else if (d_gnt && PW'(i) == tail) q_drop[i] <= 1'b0;
    if (rst) begin
      m_axi_awvalid <= 1'b0;
      m_axi_wvalid <= 1'b0;
      tail <= '0;
      w_head <= '0;
      b_head <= '0;
      w_count <= '0;
      b_count <= '0;
      beat <= '0;
    end
  end
endmodule
