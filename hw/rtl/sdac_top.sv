// sdac accelerator top level: CSR block, instruction prefetch, decode, four
// instruction queues with dependency-token counters, the load / store DMA units,
// the compute unit (mm / conv on the systolic array), the SFU, halt / done / errors,
// and an AXI4 master to DRAM.
//
//  AXI-Lite ─► sdac_csr ─start─► sdac_fetch ─► sdac_decode ─► FIFO ld  ─► LD unit (setstep, load) ──┐
//                                 (prefetch)                  FIFO cmp ─► CMP unit (sdac_mm)        ├ buffers
//                                   ▲ words                   FIFO sfu ─► SFU unit (sdac_sfu)       │ act wgt
//                                   │                         FIFO st  ─► ST unit (store) ──────────┘ acc prm
//  AXI4 AR/R ◄──► sdac_axi_rd ◄─────┴── LD: sdac_dma_burst (AR bursts) + sdac_dma_agu (R beat → line)
//  AXI4 AW/W/B ◄► sdac_axi_wr ◄──────── ST: sdac_dma_burst (AW bursts) + sdac_dma_agu (line → W beat)
//
// Semantics follow isa/isa.toml and the golden model (runtime/golden.py): an
// instruction leaves its FIFO when every token in its pop mask is available
// (tokens[src][this] > 0, consumed at issue) and its unit is idle; it pushes its
// tokens when it finishes. Bounds are checked before an instruction touches
// anything, so an erroneous instruction has no effect. The first error stops
// the machine with ERROR = code and ERR_INDEX = instruction index. Instructions
// this RTL does not implement (the SFU operations when it is built without
// sdac_sfu) complete without effect and set STATUS.UNSUPPORTED, so a test can
// tell the run is not comparable.
//
// DRAM: an AXI4 master (ID 0, INCR bursts, data bus MEMB bytes). Reads and writes
// are independent: fetch and LD share AR/R (fetch first), ST owns AW/W/B; up to
// OUTST bursts in flight per direction. A DMA burst is up to BURST_MAX lines that
// are contiguous in DRAM and inside one 4 KiB page, one line per beat (AxUSER =
// bytes per beat); fetch reads bursts of FETCH_BURST 32-byte words. A load ends
// with its last R beat, a store with its last B response (so its tokens mean the
// data is in DRAM). An R or B error response (SLVERR / DECERR) stops the machine
// at once with ERROR = OOB_DRAM and the index of the load / store (or of the
// fetched word); the unit still takes the rest of its beats. START discards the
// beats of bursts still in flight (W beats go out with WSTRB = 0). The program
// may live anywhere in DRAM (INSTR_BASE); DMA is limited to [0, DRAM_SIZE).
module sdac_top
  import sdac_isa_pkg::*;
#(
  parameter int LANES = L,
  parameter int AX = ARRAY_ROWS,
  parameter int AY = ARRAY_COLS,
  parameter int ACT_N = ACT_LINES,
  parameter int WGT_N = WGT_LINES,
  parameter int ACC_N = ACC_LINES,
  parameter int PRM_N = PRM_LINES,
  parameter int STAT_N = STAT_GROUPS,
  parameter int QDEPTH = QUEUE_DEPTH,
  parameter int TOKMAX = TOKEN_MAX,
  parameter int BURST_MAX = 16,      // beats per AXI burst (1..256)
  parameter int OUTST = 4,           // AXI bursts in flight per direction (a power of two >= 2)
  parameter int FETCH_DEPTH = 8,     // instruction prefetch FIFO (words, a power of two)
  parameter int FETCH_BURST = 4,     // instruction words per fetch burst
  localparam int MEMB = (4 * LANES > 32) ? 4 * LANES : 32   // bytes per DRAM transfer
) (
  input  logic               clk,
  input  logic               rst,
  // AXI-Lite CSR slave
  input  logic               s_awvalid,
  output logic               s_awready,
  input  logic [7:0]         s_awaddr,
  input  logic               s_wvalid,
  output logic               s_wready,
  input  logic [31:0]        s_wdata,
  output logic               s_bvalid,
  input  logic               s_bready,
  output logic [1:0]         s_bresp,
  input  logic               s_arvalid,
  output logic               s_arready,
  input  logic [7:0]         s_araddr,
  output logic               s_rvalid,
  input  logic               s_rready,
  output logic [31:0]        s_rdata,
  output logic [1:0]         s_rresp,
  // AXI4 master (DRAM): AR/R shared by fetch and LD, AW/W/B for ST; ID 0, INCR bursts
  output logic               m_axi_arvalid,
  input  logic               m_axi_arready,
  output logic [63:0]        m_axi_araddr,
  output logic [7:0]         m_axi_arlen,
  output logic [2:0]         m_axi_arsize,
  output logic [1:0]         m_axi_arburst,
  output logic [7:0]         m_axi_aruser,   // bytes per beat
  input  logic               m_axi_rvalid,
  output logic               m_axi_rready,
  input  logic [MEMB*8-1:0]  m_axi_rdata,
  input  logic               m_axi_rlast,
  input  logic [1:0]         m_axi_rresp,
  output logic               m_axi_awvalid,
  input  logic               m_axi_awready,
  output logic [63:0]        m_axi_awaddr,
  output logic [7:0]         m_axi_awlen,
  output logic [2:0]         m_axi_awsize,
  output logic [1:0]         m_axi_awburst,
  output logic [7:0]         m_axi_awuser,   // bytes per beat
  output logic               m_axi_wvalid,
  input  logic               m_axi_wready,
  output logic [MEMB*8-1:0]  m_axi_wdata,
  output logic [MEMB-1:0]    m_axi_wstrb,
  output logic               m_axi_wlast,
  input  logic               m_axi_bvalid,
  output logic               m_axi_bready,
  input  logic [1:0]         m_axi_bresp,
  output logic               irq_done
);
`define SDAC_F(W, INSTR, FIELD) W[F_``INSTR``_``FIELD``_LO +: F_``INSTR``_``FIELD``_W]

  localparam int QW = $clog2(QDEPTH);
  localparam int TW = $clog2(TOKMAX + 2) + 1;

  // ------------------------------------------------------------------ CSR
  logic start, done_r, running, unsupported_r;
  logic [7:0] err_r;
  logic [31:0] err_index_r, executed;
  logic [31:0] instr_base, instr_count, csr_step, dram_size;
  logic [63:0] cycles;

  sdac_csr #(.ID(csr_id_value(8'(ISA_VERSION), 8'(LANES), 8'(AX), 8'(AY)))) u_csr (
    .clk, .rst,
    .s_awvalid, .s_awready, .s_awaddr, .s_wvalid, .s_wready, .s_wdata, .s_bvalid, .s_bready, .s_bresp,
    .s_arvalid, .s_arready, .s_araddr, .s_rvalid, .s_rready, .s_rdata, .s_rresp,
    .start, .instr_base, .instr_count, .step(csr_step), .dram_size,
    .done(done_r), .busy(running), .unsupported(unsupported_r), .err(err_r), .err_index(err_index_r),
    .executed, .cycles
  );
  assign irq_done = done_r;

  // ------------------------------------------------------------------ buffers
  logic [8*LANES-1:0]  act_mem [ACT_N];
  logic [4*LANES-1:0]  wgt_mem [WGT_N];
  logic [32*LANES-1:0] acc_mem [ACC_N];
  logic [32*LANES-1:0] prm_mem [PRM_N];

  function automatic logic [7:0] line_bytes(input logic [1:0] b);
    unique case (b)
      BUF_ACT: return 8'(LANES);
      BUF_WGT: return 8'(LANES / 2);
      default: return 8'(4 * LANES);
    endcase
  endfunction

  function automatic logic [63:0] buf_lines(input logic [1:0] b);
    unique case (b)
      BUF_ACT: return 64'(ACT_N);
      BUF_WGT: return 64'(WGT_N);
      BUF_ACC: return 64'(ACC_N);
      default: return 64'(PRM_N);
    endcase
  endfunction

  // ------------------------------------------------------------------ AXI4 master
  // Reads (fetch, LD) and writes (ST) are independent; see sdac_axi_rd / sdac_axi_wr.
  logic f_req, f_gnt, r_fetch, r_dma, r_err;
  logic [63:0] f_addr;
  logic [7:0] f_len;
  logic [MEMB*8-1:0] rdata;
  logic ld_breq, ld_bgnt, ld_bidle, st_breq, st_bgnt, st_bidle;
  logic [63:0] ld_baddr, st_baddr;
  logic [7:0] ld_blen, st_blen;
  logic w_have, w_take, b_done, b_err;
  logic [MEMB*8-1:0] st_wdata;

  sdac_axi_rd #(.MEMB(MEMB), .OUTST(OUTST)) u_axi_rd (
    .clk, .rst, .flush(start),
    .f_req, .f_addr, .f_len, .f_gnt,
    .d_req(ld_breq), .d_addr(ld_baddr), .d_len(ld_blen), .d_bytes(ld_b), .d_gnt(ld_bgnt),
    .r_fetch, .r_dma, .rdata, .r_err,
    .m_axi_arvalid, .m_axi_arready, .m_axi_araddr, .m_axi_arlen, .m_axi_arsize, .m_axi_arburst, .m_axi_aruser,
    .m_axi_rvalid, .m_axi_rready, .m_axi_rdata, .m_axi_rlast, .m_axi_rresp
  );
  sdac_axi_wr #(.MEMB(MEMB), .OUTST(OUTST)) u_axi_wr (
    .clk, .rst, .flush(start),
    .d_req(st_breq), .d_addr(st_baddr), .d_len(st_blen), .d_bytes(st_b), .d_gnt(st_bgnt),
    .w_have, .w_data(st_wdata), .w_take, .b_done, .b_err,
    .m_axi_awvalid, .m_axi_awready, .m_axi_awaddr, .m_axi_awlen, .m_axi_awsize, .m_axi_awburst, .m_axi_awuser,
    .m_axi_wvalid, .m_axi_wready, .m_axi_wdata, .m_axi_wstrb, .m_axi_wlast,
    .m_axi_bvalid, .m_axi_bready, .m_axi_bresp
  );

  // ------------------------------------------------------------------ fetch + decode
  logic [31:0] pc, halt_index;
  logic halted;
  logic [WORD_BITS-1:0] f_word;
  logic d_valid, d_is_ctl;
  logic [7:0] d_err;
  logic [1:0] d_queue;
  logic [3:0] d_pop, d_push;
  logic [F_OPCODE_W-1:0] d_opcode;
  logic d_bad_reserved, d_bad_enum, d_bad_min, d_bad_token;
  sdac_decode u_decode (.word(f_word), .valid(d_valid), .err(d_err), .bad_reserved(d_bad_reserved),
                        .bad_enum(d_bad_enum), .bad_min(d_bad_min), .bad_token(d_bad_token),
                        .opcode(d_opcode), .is_ctl(d_is_ctl), .queue_id(d_queue), .pop(d_pop), .push(d_push));
  logic unused_decode;
  assign unused_decode = ^{d_valid, d_bad_reserved, d_bad_enum, d_bad_min, d_bad_token, d_opcode, d_pop, d_push};
  logic f_valid, f_err;              // f_word is the program's word pc; f_err: its bus error
  sdac_fetch #(.DEPTH(FETCH_DEPTH), .BURST(FETCH_BURST)) u_fetch (
    .clk, .clear(rst || start), .enable(running && !halted), .instr_base, .instr_count,
    .req(f_req), .addr(f_addr), .len(f_len), .gnt(f_gnt),
    .beat(r_fetch), .beat_word(rdata[WORD_BITS-1:0]), .beat_err(r_err),
    .head_valid(f_valid), .head_word(f_word), .head_err(f_err), .pop(f_push)
  );

  // ------------------------------------------------------------------ queues
  logic [WORD_BITS-1:0] q_word [4][QDEPTH];
  logic [31:0] q_index [4][QDEPTH];
  logic [QW-1:0] q_head [4];
  logic [QW-1:0] q_tail [4];
  logic [QW:0] q_count [4];
  logic [WORD_BITS-1:0] head_word [4];
  logic [31:0] head_index [4];
  logic [3:0] issue, u_busy, u_fin;
  logic [7:0] u_ferr [4];
  logic [WORD_BITS-1:0] u_word [4];
  logic [31:0] u_index [4];
  logic [TW-1:0] tok [4][4];         // tok[src][dst]
  logic f_push;
  assign f_push = running && !halted && f_valid && !f_err && d_err == ERR_OK && !d_is_ctl
                  && q_count[d_queue] < (QW+1)'(QDEPTH);

  always_comb begin
    for (int q = 0; q < 4; q++) begin
      logic ok;
      head_word[q] = q_word[q][q_head[q]];
      head_index[q] = q_index[q][q_head[q]];
      ok = 1'b1;
      for (int s = 0; s < 4; s++)
        if (head_word[q][F_POP_LO + s] && tok[s][q] == '0) ok = 1'b0;
      issue[q] = running && q_count[q] != '0 && ok && !u_busy[q];
    end
  end

  // ------------------------------------------------------------------ LD unit: setstep, load, sync
  typedef enum logic [2:0] {U_IDLE, U_START, U_CHECK, U_RUN, U_WAITB} ustate_t;
  ustate_t ld_state, st_state;
  logic [63:0] step_off;
  logic [63:0] ld_base, ld_last_dram, ld_last_line;
  logic [7:0] ld_b;
  logic [63:0] ld_agu_addr, ld_agu_line;
  logic [15:0] ld_agu_left, st_agu_left;
  logic ld_agu_final, st_agu_final;
  logic ld_agu_last, ld_agu_start, ld_agu_next;
  logic [1:0] ld_buf;
  logic ld_zero;
  /* verilator lint_off UNUSEDSIGNAL */
  logic [WORD_BITS-1:0] lw;   // the LD unit's instruction (only some fields used)
  /* verilator lint_on UNUSEDSIGNAL */
  assign lw = u_word[0];
  assign ld_buf = `SDAC_F(lw, LOAD, BUF);
  assign ld_zero = `SDAC_F(lw, LOAD, ZERO);
  assign ld_b = line_bytes(ld_buf);
  assign ld_base = 64'(`SDAC_F(lw, LOAD, DRAM)) + (`SDAC_F(lw, LOAD, STEP) ? step_off : 64'd0);

  sdac_dma_agu u_ld_agu (
    .clk, .start(ld_agu_start), .next(ld_agu_next), .count(16'd1), .dram(ld_base),
    .run(`SDAC_F(lw, LOAD, RUN)), .ny(`SDAC_F(lw, LOAD, NY)), .dy(`SDAC_F(lw, LOAD, DY)),
    .nz(`SDAC_F(lw, LOAD, NZ)), .dz(`SDAC_F(lw, LOAD, DZ)), .sram(`SDAC_F(lw, LOAD, SRAM)),
    .sy(`SDAC_F(lw, LOAD, SY)), .sz(`SDAC_F(lw, LOAD, SZ)), .line_bytes(ld_b),
    .addr(ld_agu_addr), .line(ld_agu_line), .last(ld_agu_last), .final_run(ld_agu_final),
    .left(ld_agu_left)
  );
  // the AGU above walks the buffer lines as R beats arrive; this one forms the AR bursts
  sdac_dma_burst #(.MAXB(BURST_MAX)) u_ld_burst (
    .clk, .clear(rst || start), .start(ld_agu_start && !ld_zero), .dram(ld_base),
    .run(`SDAC_F(lw, LOAD, RUN)), .ny(`SDAC_F(lw, LOAD, NY)), .dy(`SDAC_F(lw, LOAD, DY)),
    .nz(`SDAC_F(lw, LOAD, NZ)), .dz(`SDAC_F(lw, LOAD, DZ)), .line_bytes(ld_b),
    .valid(ld_breq), .ready(ld_bgnt), .addr(ld_baddr), .len(ld_blen), .idle(ld_bidle)
  );
  logic ld_berr;                   // an R beat of this load had an error response

  // ------------------------------------------------------------------ ST unit: store, sync
  logic [63:0] st_last_dram, st_last_line;
  logic [7:0] st_b;
  logic [63:0] st_agu_addr;
  /* verilator lint_off UNUSEDSIGNAL */
  logic [63:0] st_agu_line;   // bounds checked: only the index bits are used
  /* verilator lint_on UNUSEDSIGNAL */
  logic st_agu_last, st_agu_start, st_agu_next;
  logic [1:0] st_buf;
  /* verilator lint_off UNUSEDSIGNAL */
  logic [WORD_BITS-1:0] sw;
  /* verilator lint_on UNUSEDSIGNAL */
  assign sw = u_word[3];
  assign st_buf = `SDAC_F(sw, STORE, BUF);
  assign st_b = line_bytes(st_buf);
  sdac_dma_agu u_st_agu (
    .clk, .start(st_agu_start), .next(st_agu_next), .count(16'd1), .dram(64'(`SDAC_F(sw, STORE, DRAM))),
    .run(`SDAC_F(sw, STORE, RUN)), .ny(`SDAC_F(sw, STORE, NY)), .dy(`SDAC_F(sw, STORE, DY)),
    .nz(`SDAC_F(sw, STORE, NZ)), .dz(`SDAC_F(sw, STORE, DZ)), .sram(`SDAC_F(sw, STORE, SRAM)),
    .sy(`SDAC_F(sw, STORE, SY)), .sz(`SDAC_F(sw, STORE, SZ)), .line_bytes(st_b),
    .addr(st_agu_addr), .line(st_agu_line), .last(st_agu_last), .final_run(st_agu_final),
    .left(st_agu_left)
  );
  sdac_dma_burst #(.MAXB(BURST_MAX)) u_st_burst (
    .clk, .clear(rst || start), .start(st_agu_start), .dram(64'(`SDAC_F(sw, STORE, DRAM))),
    .run(`SDAC_F(sw, STORE, RUN)), .ny(`SDAC_F(sw, STORE, NY)), .dy(`SDAC_F(sw, STORE, DY)),
    .nz(`SDAC_F(sw, STORE, NZ)), .dz(`SDAC_F(sw, STORE, DZ)), .line_bytes(st_b),
    .valid(st_breq), .ready(st_bgnt), .addr(st_baddr), .len(st_blen), .idle(st_bidle)
  );
  // W takes the AGU's line (U_RUN); the store finishes when every burst has its B response
  logic [8:0] st_bpend;            // bursts granted and not yet answered (<= OUTST)
  logic st_berr;                   // a B response of this store was an error
  assign w_have = st_state == U_RUN;
  logic unused_axi;
  assign unused_axi = ^{ld_bidle, st_bidle, st_agu_addr, ld_agu_addr, ld_agu_left, st_agu_left, ld_agu_final, st_agu_final};
  always_comb begin
    st_wdata = '0;
    unique case (st_buf)
      BUF_ACT: st_wdata[8*LANES-1:0] = act_mem[st_agu_line[$clog2(ACT_N)-1:0]];
      BUF_WGT: st_wdata[4*LANES-1:0] = wgt_mem[st_agu_line[$clog2(WGT_N)-1:0]];
      BUF_ACC: st_wdata[32*LANES-1:0] = acc_mem[st_agu_line[$clog2(ACC_N)-1:0]];
      default: st_wdata[32*LANES-1:0] = prm_mem[st_agu_line[$clog2(PRM_N)-1:0]];
    endcase
  end

  // ------------------------------------------------------------------ CMP unit: mm on the array
  logic mm_start, mm_fin, mm_busy, mm_unsup;
  logic [7:0] mm_err;
  logic acc_we;
  logic [$clog2(ACC_N)-1:0] acc_waddr, acc_raddr;
  logic [32*LANES-1:0] acc_wdata, acc_rdata;
  logic [$clog2(ACT_N)-1:0] act_raddr [2*AX];
  logic [8*LANES-1:0] act_rdata [2*AX];
  logic [$clog2(WGT_N)-1:0] wgt_raddr;
  logic [4*LANES-1:0] wgt_rdata;
  logic [$clog2(ACT_N)-1:0] wact_raddr [LANES];
  logic [8*LANES-1:0] wact_rdata [LANES];
  always_comb begin
    for (int r = 0; r < 2 * AX; r++) act_rdata[r] = act_mem[act_raddr[r]];
    for (int c = 0; c < LANES; c++) wact_rdata[c] = act_mem[wact_raddr[c]];
  end
  assign wgt_rdata = wgt_mem[wgt_raddr];
  assign acc_rdata = acc_mem[acc_raddr];

  sdac_mm #(.LANES(LANES), .X(AX), .Y(AY), .ACT_N(ACT_N), .WGT_N(WGT_N), .ACC_N(ACC_N)) u_mm (
    .clk, .rst(rst || start), .start(mm_start), .word(u_word[1]), .busy(mm_busy), .fin(mm_fin), .err(mm_err),
    .unsup(mm_unsup),
    .act_raddr, .act_rdata, .wgt_raddr, .wgt_rdata, .wact_raddr, .wact_rdata, .acc_raddr, .acc_rdata, .acc_we, .acc_waddr, .acc_wdata
  );
  logic unused_mm_busy;
  assign unused_mm_busy = mm_busy;

  // ------------------------------------------------------------------ SFU unit
  // sdac_sfu (written separately; compiled in when hw/rtl/sdac_sfu.sv exists: sdac.hw.sim
  // defines SDAC_HAVE_SFU). Its buffer ports are granted at once; reads return one cycle later.
  logic sfu_start, sfu_done, sfu_error;
  logic [7:0] sfu_err_code;
  logic sfu_acc_rd_req, sfu_acc_wr_req, sfu_act_rd_req, sfu_act_wr_req, sfu_prm_rd_req;
  logic sfu_acc_rd_valid, sfu_act_rd_valid, sfu_prm_rd_valid;
  logic [$clog2(ACC_N)-1:0] sfu_acc_rd_addr, sfu_acc_wr_addr;
  logic [$clog2(ACT_N)-1:0] sfu_act_rd_addr, sfu_act_wr_addr;
  logic [$clog2(PRM_N)-1:0] sfu_prm_rd_addr;
  logic [32*LANES-1:0] sfu_acc_rd_data, sfu_acc_wr_data, sfu_prm_rd_data;
  logic [8*LANES-1:0] sfu_act_rd_data, sfu_act_wr_data;
  logic [LANES-1:0] sfu_acc_wr_be, sfu_act_wr_be;
  assign sfu_start = u_first[2] && u_op[2] != OP_SYNC;
`ifdef SDAC_HAVE_SFU
  logic sfu_busy;
  logic signed [63:0] unused_stat_s1, unused_stat_s2;
  sdac_sfu #(.LANES(LANES), .ACC_DEPTH(ACC_N), .ACT_DEPTH(ACT_N), .PRM_DEPTH(PRM_N), .NSTAT(STAT_N)) u_sfu (
    .clk, .rst(rst || start), .start(sfu_start), .instr(u_word[2]), .busy(sfu_busy), .done(sfu_done),
    .error(sfu_error), .err_code(sfu_err_code),
    .acc_rd_req(sfu_acc_rd_req), .acc_rd_addr(sfu_acc_rd_addr), .acc_rd_gnt(sfu_acc_rd_req),
    .acc_rd_valid(sfu_acc_rd_valid), .acc_rd_data(sfu_acc_rd_data),
    .acc_wr_req(sfu_acc_wr_req), .acc_wr_addr(sfu_acc_wr_addr), .acc_wr_data(sfu_acc_wr_data),
    .acc_wr_be(sfu_acc_wr_be), .acc_wr_gnt(sfu_acc_wr_req),
    .act_rd_req(sfu_act_rd_req), .act_rd_addr(sfu_act_rd_addr), .act_rd_gnt(sfu_act_rd_req),
    .act_rd_valid(sfu_act_rd_valid), .act_rd_data(sfu_act_rd_data),
    .act_wr_req(sfu_act_wr_req), .act_wr_addr(sfu_act_wr_addr), .act_wr_data(sfu_act_wr_data),
    .act_wr_be(sfu_act_wr_be), .act_wr_gnt(sfu_act_wr_req),
    .prm_rd_req(sfu_prm_rd_req), .prm_rd_addr(sfu_prm_rd_addr), .prm_rd_gnt(sfu_prm_rd_req),
    .prm_rd_valid(sfu_prm_rd_valid), .prm_rd_data(sfu_prm_rd_data),
    .stat_idx('0), .stat_rd_s1(unused_stat_s1), .stat_rd_s2(unused_stat_s2), .stat_wr(1'b0),
    .stat_wr_s1('0), .stat_wr_s2('0)
  );
  logic unused_sfu;
  assign unused_sfu = ^{sfu_busy, unused_stat_s1, unused_stat_s2};
`else
  assign sfu_done = 1'b0;
  assign sfu_error = 1'b0;
  assign sfu_err_code = ERR_OK;
  assign {sfu_acc_rd_req, sfu_acc_wr_req, sfu_act_rd_req, sfu_act_wr_req, sfu_prm_rd_req} = '0;
  assign {sfu_acc_rd_addr, sfu_acc_wr_addr, sfu_act_rd_addr, sfu_act_wr_addr, sfu_prm_rd_addr} = '0;
  assign {sfu_acc_wr_data, sfu_act_wr_data, sfu_acc_wr_be, sfu_act_wr_be} = '0;
  logic unused_sfu;
  assign unused_sfu = ^{sfu_start, sfu_acc_rd_valid, sfu_act_rd_valid, sfu_prm_rd_valid, sfu_acc_rd_data,
                        sfu_act_rd_data, sfu_prm_rd_data, STAT_N};
`endif
  always_ff @(posedge clk) begin
    sfu_acc_rd_valid <= sfu_acc_rd_req;
    sfu_act_rd_valid <= sfu_act_rd_req;
    sfu_prm_rd_valid <= sfu_prm_rd_req;
    sfu_acc_rd_data <= acc_mem[sfu_acc_rd_addr];
    sfu_act_rd_data <= act_mem[sfu_act_rd_addr];
    sfu_prm_rd_data <= prm_mem[sfu_prm_rd_addr];
  end

  // ------------------------------------------------------------------ unit control
  // u_first[q]: first cycle of the instruction in unit q (the cycle after issue).
  // Instructions without work (sync, setstep, and the kinds not implemented yet)
  // finish in that cycle.
  logic [3:0] u_first, u_simple, u_unsup;
  logic [F_OPCODE_W-1:0] u_op [4];
  always_comb begin
    for (int q = 0; q < 4; q++) u_op[q] = u_word[q][F_OPCODE_LO +: F_OPCODE_W];
    u_simple[0] = u_op[0] != OP_LOAD;
    u_unsup[0] = 1'b0;
    u_simple[1] = u_op[1] != OP_MM && u_op[1] != OP_CONV;
    u_unsup[1] = mm_fin && mm_unsup;
`ifdef SDAC_HAVE_SFU
    u_simple[2] = u_op[2] == OP_SYNC;
    u_unsup[2] = 1'b0;
`else
    u_simple[2] = 1'b1;
    u_unsup[2] = u_op[2] != OP_SYNC;
`endif
    u_simple[3] = u_op[3] != OP_STORE;
    u_unsup[3] = 1'b0;
  end
  assign mm_start = u_first[1] && (u_op[1] == OP_MM || u_op[1] == OP_CONV);
  assign ld_agu_start = ld_state == U_CHECK && !u_fin[0];
  assign st_agu_start = st_state == U_CHECK && !u_fin[3];

  // Finish signals (combinational; the unit goes idle at the next edge).
  always_comb begin
    u_fin = '0;
    for (int q = 0; q < 4; q++) u_ferr[q] = ERR_OK;
    for (int q = 0; q < 4; q++)
      if (u_busy[q] && u_first[q] && u_simple[q]) u_fin[q] = 1'b1;
    // LD
    if (ld_state == U_CHECK) begin
      if (!ld_zero && ld_last_dram >= 64'(dram_size)) begin
        u_fin[0] = 1'b1; u_ferr[0] = ERR_OOB_DRAM;
      end else if (ld_last_line >= buf_lines(ld_buf)) begin
        u_fin[0] = 1'b1; u_ferr[0] = ERR_OOB_BUF;
      end
    end
    if (ld_state == U_RUN && ld_zero && ld_agu_last) u_fin[0] = 1'b1;
    if (ld_state == U_RUN && !ld_zero && r_dma && ld_agu_last) begin
      u_fin[0] = 1'b1;
      if (ld_berr || r_err) u_ferr[0] = ERR_OOB_DRAM;
    end
    // ST
    if (st_state == U_CHECK) begin
      if (st_last_line >= buf_lines(st_buf)) begin
        u_fin[3] = 1'b1; u_ferr[3] = ERR_OOB_BUF;
      end else if (st_last_dram >= 64'(dram_size)) begin
        u_fin[3] = 1'b1; u_ferr[3] = ERR_OOB_DRAM;
      end
    end
    if (st_state == U_WAITB && (st_bpend == '0 || (st_bpend == 9'd1 && b_done))) begin
      u_fin[3] = 1'b1;
      if (st_berr || (b_done && b_err)) u_ferr[3] = ERR_OOB_DRAM;
    end
    // CMP
    if (mm_fin) begin
      u_fin[1] = 1'b1; u_ferr[1] = mm_err;
    end
    // SFU
    if (sfu_done) begin
      u_fin[2] = 1'b1; u_ferr[2] = sfu_error ? sfu_err_code : ERR_OK;
    end
  end

  // ------------------------------------------------------------------ main sequential logic
  logic any_busy, all_empty, can_issue, fetch_blocked, tok_zero;
  logic [31:0] dl_index;
  logic [3:0] inc [4];   // inc[src] bit dst
  logic [3:0] dec [4];   // dec[src] bit dst
  logic tok_over;
  logic [31:0] over_index;
  always_comb begin
    any_busy = u_busy != '0;
    all_empty = 1'b1;
    dl_index = '1;
    for (int q = 0; q < 4; q++) begin
      if (q_count[q] != '0) begin
        all_empty = 1'b0;
        if (head_index[q] < dl_index) dl_index = head_index[q];
      end
    end
    can_issue = issue != '0;
    fetch_blocked = halted || (f_valid && !f_err && d_err == ERR_OK && !d_is_ctl && !f_push);
    tok_zero = 1'b1;
    for (int s = 0; s < 4; s++)
      for (int d = 0; d < 4; d++)
        if (tok[s][d] != '0) tok_zero = 1'b0;
    for (int s = 0; s < 4; s++) begin
      inc[s] = (u_fin[s] && u_ferr[s] == ERR_OK) ? u_word[s][F_PUSH_LO +: 4] : 4'd0;
      dec[s] = '0;
    end
    for (int d = 0; d < 4; d++)
      for (int s = 0; s < 4; s++)
        if (issue[d] && head_word[d][F_POP_LO + s]) dec[s][d] = 1'b1;
    tok_over = 1'b0;
    over_index = '0;
    for (int s = 0; s < 4; s++)
      for (int d = 0; d < 4; d++)
        if (32'(tok[s][d]) + 32'(inc[s][d]) - 32'(dec[s][d]) > TOKMAX && !tok_over) begin
          tok_over = 1'b1;
          over_index = u_index[s];
        end
  end

  task automatic fail(input logic [7:0] code, input logic [31:0] index);
    if (err_r == ERR_OK) begin
      err_r <= code;
      err_index_r <= index;
    end
    running <= 1'b0;
    done_r <= 1'b1;
  endtask

  always_ff @(posedge clk) begin
    if (running) cycles <= cycles + 64'd1;

    // Fetch
    if (running) begin
      if (!halted) begin
        if (!f_valid) begin
          if (pc >= instr_count) fail(ERR_FETCH_OOB, pc);
        end else if (f_err) fail(ERR_OOB_DRAM, pc);      // bus error response on the instruction word
        else if (d_err != ERR_OK) fail(d_err, pc);
        else if (d_is_ctl) begin
          halted <= 1'b1;
          halt_index <= pc;
        end else if (f_push) begin
          q_word[d_queue][q_tail[d_queue]] <= f_word;
          q_index[d_queue][q_tail[d_queue]] <= pc;
          q_tail[d_queue] <= q_tail[d_queue] + 1'b1;
          pc <= pc + 32'd1;
        end
      end
    end

    // Issue and queue bookkeeping
    for (int q = 0; q < 4; q++) begin
      logic pushed;
      pushed = f_push && d_queue == 2'(q);
      if (issue[q]) begin
        q_head[q] <= q_head[q] + 1'b1;
        u_busy[q] <= 1'b1;
        u_word[q] <= head_word[q];
        u_index[q] <= head_index[q];
      end
      q_count[q] <= q_count[q] + (QW+1)'(pushed) - (QW+1)'(issue[q]);
      if (u_fin[q]) begin
        u_busy[q] <= 1'b0;
        if (u_ferr[q] != ERR_OK) fail(u_ferr[q], u_index[q]);
        else if (u_unsup[q]) unsupported_r <= 1'b1;
      end
    end
    executed <= executed + 32'($countones(u_fin));
    for (int s = 0; s < 4; s++)
      for (int d = 0; d < 4; d++)
        tok[s][d] <= tok[s][d] + TW'(inc[s][d]) - TW'(dec[s][d]);
    if (running && tok_over) fail(ERR_TOKEN_OVERFLOW, over_index);

    // LD unit
    unique case (ld_state)
      U_IDLE: if (issue[0]) ld_state <= U_START;
      U_START: begin
        if (u_op[0] == OP_SETSTEP) begin
          step_off <= (`SDAC_F(lw, SETSTEP, SRC) == STEPSRC_CSR ? 64'(csr_step) : 64'(`SDAC_F(lw, SETSTEP, STEP)))
                      * 64'(`SDAC_F(lw, SETSTEP, BANK));
        end
        if (u_op[0] == OP_LOAD) begin
          ld_last_dram <= ld_base + 64'(`SDAC_F(lw, LOAD, NZ) - 16'd1) * 64'(`SDAC_F(lw, LOAD, DZ))
                          + 64'(`SDAC_F(lw, LOAD, NY) - 16'd1) * 64'(`SDAC_F(lw, LOAD, DY))
                          + 64'(`SDAC_F(lw, LOAD, RUN)) * 64'(ld_b) - 64'd1;
          ld_last_line <= 64'(`SDAC_F(lw, LOAD, SRAM)) + 64'(`SDAC_F(lw, LOAD, NZ) - 16'd1) * 64'(`SDAC_F(lw, LOAD, SZ))
                          + 64'(`SDAC_F(lw, LOAD, NY) - 16'd1) * 64'(`SDAC_F(lw, LOAD, SY))
                          + 64'(`SDAC_F(lw, LOAD, RUN)) - 64'd1;
          ld_state <= U_CHECK;
        end else ld_state <= U_IDLE;
      end
      U_CHECK: begin
        ld_state <= u_fin[0] ? U_IDLE : U_RUN;
        ld_berr <= 1'b0;
      end
      U_RUN: if (ld_zero) begin
               buf_write(ld_buf, ld_agu_line, '0);
               if (ld_agu_last) ld_state <= U_IDLE;
             end else if (r_dma) begin
               // a beat with an error response writes nothing and stops the machine at once;
               // the unit still takes the load's remaining beats
               if (r_err) begin
                 ld_berr <= 1'b1;
                 fail(ERR_OOB_DRAM, u_index[0]);
               end else buf_write(ld_buf, ld_agu_line, rdata[32*LANES-1:0]);
               if (ld_agu_last) ld_state <= U_IDLE;
             end
      default: ld_state <= U_IDLE;
    endcase

    // ST unit
    unique case (st_state)
      U_IDLE: if (issue[3]) st_state <= U_START;
      U_START: begin
        if (u_op[3] == OP_STORE) begin
          st_last_dram <= 64'(`SDAC_F(sw, STORE, DRAM)) + 64'(`SDAC_F(sw, STORE, NZ) - 16'd1) * 64'(`SDAC_F(sw, STORE, DZ))
                          + 64'(`SDAC_F(sw, STORE, NY) - 16'd1) * 64'(`SDAC_F(sw, STORE, DY))
                          + 64'(`SDAC_F(sw, STORE, RUN)) * 64'(st_b) - 64'd1;
          st_last_line <= 64'(`SDAC_F(sw, STORE, SRAM)) + 64'(`SDAC_F(sw, STORE, NZ) - 16'd1) * 64'(`SDAC_F(sw, STORE, SZ))
                          + 64'(`SDAC_F(sw, STORE, NY) - 16'd1) * 64'(`SDAC_F(sw, STORE, SY))
                          + 64'(`SDAC_F(sw, STORE, RUN)) - 64'd1;
          st_state <= U_CHECK;
        end else st_state <= U_IDLE;
      end
      U_CHECK: begin
        st_state <= u_fin[3] ? U_IDLE : U_RUN;
        st_berr <= 1'b0;
      end
      U_RUN: if (w_take && st_agu_last) st_state <= U_WAITB;
      U_WAITB: if (u_fin[3]) st_state <= U_IDLE;
      default: st_state <= U_IDLE;
    endcase

    st_bpend <= st_bpend + 9'(st_bgnt) - 9'(b_done);
    if (b_done && b_err && st_state != U_IDLE) begin
      st_berr <= 1'b1;
      fail(ERR_OOB_DRAM, u_index[3]);
    end

    u_first <= issue;
    if (acc_we) acc_mem[acc_waddr] <= acc_wdata;
    for (int l = 0; l < LANES; l++) begin
      if (sfu_acc_wr_req && sfu_acc_wr_be[l]) acc_mem[sfu_acc_wr_addr][32*l +: 32] <= sfu_acc_wr_data[32*l +: 32];
      if (sfu_act_wr_req && sfu_act_wr_be[l]) act_mem[sfu_act_wr_addr][8*l +: 8] <= sfu_act_wr_data[8*l +: 8];
    end

    // Halt, deadlock
    if (running && halted && all_empty && !any_busy && !can_issue) begin
      if (!tok_zero) fail(ERR_TOKEN_LEAK, halt_index);
      else begin
        running <= 1'b0;
        done_r <= 1'b1;
        executed <= executed + 32'd1;
      end
    end else if (running && !any_busy && !can_issue && fetch_blocked && !all_empty) begin
      fail(ERR_DEADLOCK, dl_index);
    end

    if (rst || start) begin
      running <= start;
      done_r <= 1'b0;
      err_r <= ERR_OK;
      err_index_r <= '0;
      unsupported_r <= 1'b0;
      executed <= '0;
      cycles <= '0;
      pc <= '0;
      halted <= 1'b0;
      halt_index <= '0;
      step_off <= '0;
      ld_state <= U_IDLE;
      st_state <= U_IDLE;
      st_bpend <= '0;
      u_first <= '0;
      for (int q = 0; q < 4; q++) begin
        q_head[q] <= '0;
        q_tail[q] <= '0;
        q_count[q] <= '0;
        u_busy[q] <= 1'b0;
        for (int d = 0; d < 4; d++) tok[q][d] <= '0;
      end
    end
  end

  assign ld_agu_next = ld_state == U_RUN && (ld_zero || r_dma);
  assign st_agu_next = w_take;

  /* verilator lint_off UNUSEDSIGNAL */
  task automatic buf_write(input logic [1:0] b, input logic [63:0] line, input logic [32*LANES-1:0] data);
    unique case (b)
      BUF_ACT: act_mem[line[$clog2(ACT_N)-1:0]] <= data[8*LANES-1:0];
      BUF_WGT: wgt_mem[line[$clog2(WGT_N)-1:0]] <= data[4*LANES-1:0];
      BUF_ACC: acc_mem[line[$clog2(ACC_N)-1:0]] <= data;
      default: prm_mem[line[$clog2(PRM_N)-1:0]] <= data;
    endcase
  endtask
  /* verilator lint_on UNUSEDSIGNAL */
`undef SDAC_F
endmodule
