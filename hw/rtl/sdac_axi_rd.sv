// Read half of sdac_top's AXI4 master: the AR channel shared by instruction fetch (bursts of
// 32-byte words, sdac_fetch) and the load DMA (INCR bursts from sdac_dma_burst), and the R channel routed back to
// whichever asked.
//
// AR is a register: a request is granted (f_gnt / d_gnt) when the register is free (empty, or
// its burst is taken by ARREADY in this cycle) and fewer than OUTST bursts are in flight; fetch
// wins over the DMA (its bursts are short and the instruction stream waits on them). All bursts
// use ID 0, so R beats come back in request order and a FIFO of owners (one entry per burst,
// popped at RLAST) routes them. RREADY is always high: both consumers take a beat per cycle.
// `flush` (START) turns every burst still in flight into a discarded one, so beats of an
// abandoned run never reach the next one.
//
// AxUSER carries the bytes per beat B (a DMA line: L, L/2 or 4L bytes; fetch 32): beat i of a
// burst is the B bytes at ARADDR + i * B, in the low bytes of RDATA. AxSIZE names the bus width.
module sdac_axi_rd #(
  parameter int MEMB = 32,                 // bytes per beat (data bus)
  parameter int OUTST = 4                  // bursts in flight, a power of two >= 2
) (
  input  logic              clk,
  input  logic              rst,
  input  logic              flush,
  // fetch: a burst of 32-byte instruction words
  input  logic              f_req,
  input  logic [63:0]       f_addr,
  input  logic [7:0]        f_len,
  output logic              f_gnt,
  // load DMA: a burst
  input  logic              d_req,
  input  logic [63:0]       d_addr,
  input  logic [7:0]        d_len,
  input  logic [7:0]        d_bytes,
  output logic              d_gnt,
  // R beats for the owners (rdata / r_err with them)
  output logic              r_fetch,
  output logic              r_dma,
  output logic [MEMB*8-1:0] rdata,
  output logic              r_err,
  // AXI4 AR / R
  output logic              m_axi_arvalid,
  input  logic              m_axi_arready,
  output logic [63:0]       m_axi_araddr,
  output logic [7:0]        m_axi_arlen,
  output logic [2:0]        m_axi_arsize,
  output logic [1:0]        m_axi_arburst,
  output logic [7:0]        m_axi_aruser,
  input  logic              m_axi_rvalid,
  output logic              m_axi_rready,
  input  logic [MEMB*8-1:0] m_axi_rdata,
  input  logic              m_axi_rlast,
  /* verilator lint_off UNUSEDSIGNAL */
  input  logic [1:0]        m_axi_rresp     // bit 0 (EXOKAY vs OKAY) does not matter
  /* verilator lint_on UNUSEDSIGNAL */
);
  localparam int PW = $clog2(OUTST);
  typedef enum logic [1:0] {O_DISCARD, O_FETCH, O_DMA} owner_t;

  owner_t owner [OUTST];
  logic [PW-1:0] head, tail;
  logic [PW:0] count;
  logic can, push, pop;
  owner_t head_owner;

  assign can = (!m_axi_arvalid || m_axi_arready) && count < (PW+1)'(OUTST);
  assign f_gnt = can && f_req;
  assign d_gnt = can && d_req && !f_req;
  assign push = f_gnt || d_gnt;
  assign head_owner = count != '0 ? owner[head] : O_DISCARD;
  assign pop = m_axi_rvalid && m_axi_rlast && count != '0;

  assign m_axi_arsize = 3'($clog2(MEMB));
  assign m_axi_arburst = 2'b01;            // INCR
  assign m_axi_rready = 1'b1;
  assign rdata = m_axi_rdata;
  assign r_err = m_axi_rresp[1];           // SLVERR or DECERR
  assign r_fetch = m_axi_rvalid && head_owner == O_FETCH;
  assign r_dma = m_axi_rvalid && head_owner == O_DMA;

  always_ff @(posedge clk) begin
    if (m_axi_arvalid && m_axi_arready) m_axi_arvalid <= 1'b0;
    if (push) begin
      m_axi_arvalid <= 1'b1;
      m_axi_araddr <= f_gnt ? f_addr : d_addr;
      m_axi_arlen <= f_gnt ? f_len : d_len;
      m_axi_aruser <= f_gnt ? 8'd32 : d_bytes;
      owner[tail] <= flush ? O_DISCARD : f_gnt ? O_FETCH : O_DMA;
      tail <= tail + 1'b1;
    end
    if (flush)
      for (int i = 0; i < OUTST; i++)
        if (!(push && PW'(i) == tail)) owner[i] <= O_DISCARD;
    if (pop) head <= head + 1'b1;
    count <= count + (PW+1)'(push) - (PW+1)'(pop);
    if (rst) begin
      m_axi_arvalid <= 1'b0;
      head <= '0;
      tail <= '0;
      count <= '0;
    end
  end
endmodule
