// Special function unit: deq, add, act, deqact, geglu, norm, softmax and transpose, bit-exact with
// isa/numerics.py and the golden model (runtime/golden.py). docs/hardware.md, section "SFU".
//
// One instruction at a time: `start` (sampled while idle) latches the 256-bit word; the unit
// checks every region first (OOB_BUF / OOB_STAT / BAD_FIELD / OVERLAP, in the golden model's
// order) so a failing instruction changes nothing, reads its scalar prm words, then:
// * deq, add, act, geglu, norm, softmax stream their lines through a pipeline (section
//   "element-wise pipeline" below): per-operand read walkers and line FIFOs, NSTG compute stages
//   of L lanes (int64 wrap-around semantics like numpy), statistics / row reductions and the
//   write at the tail; one line per cycle when each buffer port serves one operand (norm first
//   computes its group parameters, one group per cycle; softmax streams each row three times;
//   deqact runs deq's stages, then act's, on the same line);
// * transpose moves L x L byte tiles (reads one line per cycle, then writes one per cycle).
// `done` pulses for one cycle at the end, with `error` / `err_code` when the instruction failed.
//
// Buffer ports, one line per access (request / grant, responses in order):
//   read:  X_rd_req + X_rd_addr held until X_rd_gnt; X_rd_valid + X_rd_data come one or more
//          cycles after the granting cycle. A new request may follow in the next cycle; a
//          memory that cannot take another read while one is outstanding withholds gnt.
//   write: X_wr_req + addr + data + lane enables (be) held until X_wr_gnt.
// Requests are Moore outputs (registered state only), never functions of gnt / valid.
//
// Sources and destination may coincide exactly (in place, d = s with equal strides); other
// partial overlaps between a result and an operand are not allowed (the ISA's aliasing rule, the
// compiler's verifier): reads run ahead of writes by up to the pipeline depth.
module sdac_sfu
  import sdac_isa_pkg::*;
#(
  parameter int LANES = L,
  parameter int ACC_DEPTH = ACC_LINES,
  parameter int ACT_DEPTH = ACT_LINES,
  parameter int PRM_DEPTH = PRM_LINES,
  parameter int NSTAT = STAT_GROUPS,
  parameter int PCACHE_LINES = 64,   // prm vector cache (lines per vector), see the pipeline below
  localparam int ACCW = $clog2(ACC_DEPTH),
  localparam int ACTW = $clog2(ACT_DEPTH),
  localparam int PRMW = $clog2(PRM_DEPTH),
  localparam int SW = $clog2(NSTAT),
  localparam int LW = $clog2(LANES)
) (
  input  logic                  clk,
  input  logic                  rst,
  // instruction handshake
  input  logic                  start,
  /* verilator lint_off UNUSEDSIGNAL */   // header token masks and reserved bits: not the SFU's business
  input  logic [WORD_BITS-1:0]  instr,
  /* verilator lint_on UNUSEDSIGNAL */
  output logic                  busy,
  output logic                  done,       // one-cycle pulse
  output logic                  error,      // with done: the instruction failed (no state changed)
  output logic [7:0]            err_code,   // ERR_* of the package; held until the next start
  // acc buffer (int32 lanes)
  output logic                  acc_rd_req,
  output logic [ACCW-1:0]       acc_rd_addr,
  input  logic                  acc_rd_gnt,
  input  logic                  acc_rd_valid,
  input  logic [32*LANES-1:0]   acc_rd_data,
  output logic                  acc_wr_req,
  output logic [ACCW-1:0]       acc_wr_addr,
  output logic [32*LANES-1:0]   acc_wr_data,
  output logic [LANES-1:0]      acc_wr_be,
  input  logic                  acc_wr_gnt,
  // act buffer (int8 lanes)
  output logic                  act_rd_req,
  output logic [ACTW-1:0]       act_rd_addr,
  input  logic                  act_rd_gnt,
  input  logic                  act_rd_valid,
  input  logic [8*LANES-1:0]    act_rd_data,
  output logic                  act_wr_req,
  output logic [ACTW-1:0]       act_wr_addr,
  output logic [8*LANES-1:0]    act_wr_data,
  output logic [LANES-1:0]      act_wr_be,
  input  logic                  act_wr_gnt,
  // prm buffer (uint32 lanes), read only
  output logic                  prm_rd_req,
  output logic [PRMW-1:0]       prm_rd_addr,
  input  logic                  prm_rd_gnt,
  input  logic                  prm_rd_valid,
  input  logic [32*LANES-1:0]   prm_rd_data,
  // statistics registers: read (combinational) and write (while idle) for tests / context
  input  logic [SW-1:0]         stat_idx,
  output logic signed [63:0]    stat_rd_s1,
  output logic signed [63:0]    stat_rd_s2,
  input  logic                  stat_wr,
  input  logic signed [63:0]    stat_wr_s1,
  input  logic signed [63:0]    stat_wr_s2
);
`define SFU_F(INSTR, FIELD) instr[F_``INSTR``_``FIELD``_LO +: F_``INSTR``_``FIELD``_W]

  typedef logic signed [63:0] s64;

  // ---------------------------------------------------------------- numerics (isa/numerics.py)
  // rshift_round with numpy's int64 semantics: s > 0 rounds half up (shift clamped to 62),
  // s <= 0 shifts left by min(-s, 62); every add / shift wraps modulo 2**64.
  function automatic s64 rsr(input s64 x, input logic signed [39:0] s);
    logic [5:0] n;
    if (s > 40'sd0) begin
      n = (s > 40'sd62) ? 6'd62 : 6'(s);
      return (x + (64'sd1 <<< (n - 6'd1))) >>> n;
    end
    n = (s < -40'sd62) ? 6'd62 : 6'(-s);
    return x <<< n;
  endfunction

  function automatic s64 sat16(input s64 x);
    if (x > 64'sd32767) return 64'sd32767;
    if (x < -64'sd32768) return -64'sd32768;
    return x;
  endfunction

  function automatic s64 sat8(input s64 x);
    if (x > 64'sd127) return 64'sd127;
    if (x < -64'sd128) return -64'sd128;
    return x;
  endfunction

  function automatic s64 clip(input s64 x, input s64 lo, input s64 hi);
    if (x < lo) return lo;
    if (x > hi) return hi;
    return x;
  endfunction

  // floor(log2 v) of a positive value (v >= 1)
  function automatic logic [5:0] log2floor(input logic [63:0] v);
    logic [5:0] k;
    k = 6'd0;
    for (int b = 1; b < 64; b++) if (v[b]) k = 6'(b);
    return k;
  endfunction

  /* verilator lint_off UNUSEDSIGNAL */   // bits 30-31 of a scale entry are ignored
  // a scale entry's multiplier (unsigned 24 bits, as a positive s64) and shift (6 bits)
  function automatic s64 e_mul(input logic [31:0] e);
    return s64'({40'd0, e[23:0]});
  endfunction

  function automatic logic signed [39:0] e_sh(input logic [31:0] e);
    return 40'(e[29:24]);
  endfunction
  /* verilator lint_on UNUSEDSIGNAL */

  // last line of a region of n rows of `lines` lines at stride rs (48-bit, no wrap)
  function automatic logic [47:0] last_line(input logic [19:0] base, input logic [15:0] n,
                                            input logic [15:0] rs, input logic [16:0] lines);
    return 48'(base) + 48'(n - 16'd1) * 48'(rs) + 48'(lines) - 48'd1;
  endfunction

  // ---------------------------------------------------------------- decoded instruction
  typedef enum logic [3:0] {K_DEQ, K_ADD, K_ACT, K_GEGLU, K_NORM, K_SOFTMAX, K_TRANSPOSE, K_DEQACT, K_BAD} kind_t;

  typedef struct packed {
    kind_t       kind;
    logic        a_act;      // operand A (or S) from act (else acc)
    logic [19:0] a_base;
    logic [15:0] a_rs;
    logic        b_en;       // second operand line (add B, geglu B)
    logic        b_act;
    logic [19:0] b_base;
    logic [15:0] b_rs;
    logic        d_act;      // result in act (int8), else acc
    logic [19:0] d_base;
    logic [15:0] d_rs;
    logic [15:0] rows;
    logic [15:0] cols;
    logic        sc_en;      // scalar scale entry PRMW[sc]
    logic [19:0] sc;
    logic        p1_en;      // per-column prm vector 1: deq scale (per_ch), norm gamma
    logic [19:0] p1_base;
    logic        p2_en;      // per-column prm vector 2: deq bias, norm beta
    logic [19:0] p2_base;
    logic        st;
    logic        st_clr;
    logic        st_chan;
    logic [11:0] gsize;
    logic [11:0] gbase;
    logic [1:0]  fn;
    logic [4:0]  frac;
    logic [19:0] nd;
    logic        sc2_en;     // a second scalar scale entry PRMW[sc2] (scalar slot 1)
    logic [19:0] sc2;        //   deqact: the output scale; softmax with pre: the scores' first scale
  } dec_t;

  dec_t dec, q;   // decoded from the input word; latched at start

  always_comb begin
    dec = '0;
    dec.gsize = 12'd1;
    unique case (instr[F_OPCODE_LO +: F_OPCODE_W])
      OP_DEQ, OP_DEQACT: begin
        // deqact lists deq's fields first, at deq's bit positions (isa.toml; tests/isa checks it)
        dec.a_act = `SFU_F(DEQ, SBUF);
        dec.a_base = `SFU_F(DEQ, S);
        dec.a_rs = `SFU_F(DEQ, SRS);
        dec.d_base = `SFU_F(DEQ, D);
        dec.d_rs = `SFU_F(DEQ, DRS);
        dec.rows = `SFU_F(DEQ, ROWS);
        dec.cols = `SFU_F(DEQ, COLS);
        dec.sc = `SFU_F(DEQ, SC);
        dec.sc_en = !`SFU_F(DEQ, PER_CH);
        dec.p1_en = `SFU_F(DEQ, PER_CH);
        dec.p1_base = `SFU_F(DEQ, SC);
        dec.p2_en = `SFU_F(DEQ, BIAS);
        dec.p2_base = `SFU_F(DEQ, BB);
        if (instr[F_OPCODE_LO +: F_OPCODE_W] == OP_DEQ) begin
          dec.kind = K_DEQ;
          dec.st = `SFU_F(DEQ, ST);
          dec.st_clr = `SFU_F(DEQ, ST_CLR);
          dec.st_chan = `SFU_F(DEQ, ST_MODE);
          dec.gsize = `SFU_F(DEQ, GSIZE);
          dec.gbase = `SFU_F(DEQ, GBASE);
        end else begin
          dec.kind = K_DEQACT;
          dec.d_act = `SFU_F(DEQACT, OUT);
          dec.fn = `SFU_F(DEQACT, FN);
          dec.frac = `SFU_F(DEQACT, FRAC);
          dec.sc2_en = 1'b1;
          dec.sc2 = `SFU_F(DEQACT, OSC);
        end
      end
      OP_ADD: begin
        dec.kind = K_ADD;
        dec.a_base = `SFU_F(ADD, A);
        dec.a_rs = `SFU_F(ADD, ARS);
        dec.b_en = 1'b1;
        dec.b_act = `SFU_F(ADD, BBUF);
        dec.b_base = `SFU_F(ADD, B);
        dec.b_rs = `SFU_F(ADD, BRS);
        dec.d_base = `SFU_F(ADD, D);
        dec.d_rs = `SFU_F(ADD, DRS);
        dec.rows = `SFU_F(ADD, ROWS);
        dec.cols = `SFU_F(ADD, COLS);
        dec.sc_en = 1'b1;
        dec.sc = `SFU_F(ADD, SC);
        dec.st = `SFU_F(ADD, ST);
        dec.st_clr = `SFU_F(ADD, ST_CLR);
        dec.st_chan = `SFU_F(ADD, ST_MODE);
        dec.gsize = `SFU_F(ADD, GSIZE);
        dec.gbase = `SFU_F(ADD, GBASE);
      end
      OP_ACT: begin
        dec.kind = K_ACT;
        dec.a_act = `SFU_F(ACT, SBUF);
        dec.a_base = `SFU_F(ACT, S);
        dec.a_rs = `SFU_F(ACT, SRS);
        dec.d_act = `SFU_F(ACT, OUT);
        dec.d_base = `SFU_F(ACT, D);
        dec.d_rs = `SFU_F(ACT, DRS);
        dec.rows = `SFU_F(ACT, ROWS);
        dec.cols = `SFU_F(ACT, COLS);
        dec.fn = `SFU_F(ACT, FN);
        dec.frac = `SFU_F(ACT, FRAC);
        dec.sc_en = 1'b1;
        dec.sc = `SFU_F(ACT, SC);
        dec.st = `SFU_F(ACT, ST);
        dec.st_clr = `SFU_F(ACT, ST_CLR);
        dec.st_chan = `SFU_F(ACT, ST_MODE);
        dec.gsize = `SFU_F(ACT, GSIZE);
        dec.gbase = `SFU_F(ACT, GBASE);
      end
      OP_GEGLU: begin
        dec.kind = K_GEGLU;
        dec.a_base = `SFU_F(GEGLU, A);
        dec.a_rs = `SFU_F(GEGLU, ARS);
        dec.b_en = 1'b1;
        dec.b_base = `SFU_F(GEGLU, B);
        dec.b_rs = `SFU_F(GEGLU, BRS);
        dec.d_act = `SFU_F(GEGLU, OUT);
        dec.d_base = `SFU_F(GEGLU, D);
        dec.d_rs = `SFU_F(GEGLU, DRS);
        dec.rows = `SFU_F(GEGLU, ROWS);
        dec.cols = `SFU_F(GEGLU, COLS);
        dec.fn = FN_GELU;
        dec.frac = `SFU_F(GEGLU, FRAC);
        dec.sc_en = 1'b1;
        dec.sc = `SFU_F(GEGLU, SC);
      end
      OP_NORM: begin
        dec.kind = K_NORM;
        dec.a_base = `SFU_F(NORM, S);
        dec.a_rs = `SFU_F(NORM, SRS);
        dec.d_act = `SFU_F(NORM, OUT);
        dec.d_base = `SFU_F(NORM, D);
        dec.d_rs = `SFU_F(NORM, DRS);
        dec.rows = `SFU_F(NORM, ROWS);
        dec.cols = `SFU_F(NORM, COLS);
        dec.st_chan = `SFU_F(NORM, ST_MODE);
        dec.gsize = `SFU_F(NORM, GSIZE);
        dec.gbase = `SFU_F(NORM, GBASE);
        dec.nd = `SFU_F(NORM, ND);
        dec.p1_en = 1'b1;
        dec.p1_base = `SFU_F(NORM, GAMMA);
        dec.p2_en = 1'b1;
        dec.p2_base = `SFU_F(NORM, BETA);
        dec.fn = `SFU_F(NORM, FN);
        dec.frac = `SFU_F(NORM, FRAC);
        dec.sc_en = 1'b1;
        dec.sc = `SFU_F(NORM, SC);
      end
      OP_SOFTMAX: begin
        dec.kind = K_SOFTMAX;
        dec.a_base = `SFU_F(SOFTMAX, S);
        dec.a_rs = `SFU_F(SOFTMAX, SRS);
        dec.d_act = 1'b1;
        dec.d_base = `SFU_F(SOFTMAX, D);
        dec.d_rs = `SFU_F(SOFTMAX, DRS);
        dec.rows = `SFU_F(SOFTMAX, ROWS);
        dec.cols = `SFU_F(SOFTMAX, COLS);
        dec.sc_en = 1'b1;
        dec.sc = `SFU_F(SOFTMAX, SC);
        dec.sc2_en = `SFU_F(SOFTMAX, PRE);
        dec.sc2 = `SFU_F(SOFTMAX, PSC);
      end
      OP_TRANSPOSE: begin
        dec.kind = K_TRANSPOSE;
        dec.a_act = 1'b1;
        dec.a_base = `SFU_F(TRANSPOSE, S);
        dec.a_rs = `SFU_F(TRANSPOSE, SRS);
        dec.d_act = 1'b1;
        dec.d_base = `SFU_F(TRANSPOSE, D);
        dec.d_rs = `SFU_F(TRANSPOSE, DRS);
        dec.rows = `SFU_F(TRANSPOSE, ROWS);
        dec.cols = `SFU_F(TRANSPOSE, COLS);
      end
      default: dec.kind = K_BAD;
    endcase
  end

  // ---------------------------------------------------------------- region checks
  logic [16:0] nl;        // lines per row: ceil(cols / L)
  logic [16:0] nlr;       // ceil(rows / L): lines per row of a transpose result
  assign nl = 17'((32'(q.cols) + 32'(LANES) - 32'd1) / 32'(LANES));
  assign nlr = 17'((32'(q.rows) + 32'(LANES) - 32'd1) / 32'(LANES));

  function automatic logic oob(input logic [19:0] base, input logic [15:0] n, input logic [15:0] rs,
                               input logic [16:0] lines, input logic in_act);
    return last_line(base, n, rs, lines) >= (in_act ? 48'(ACT_DEPTH) : 48'(ACC_DEPTH));
  endfunction

  function automatic logic prm_oob(input logic [19:0] base, input logic [16:0] lines);
    return last_line(base, 16'd1, 16'd0, lines) >= 48'(PRM_DEPTH);
  endfunction

  function automatic logic word_oob(input logic [21:0] w);   // PRMW[w]
    return 32'(w) / 32'(LANES) >= 32'(PRM_DEPTH);
  endfunction

  logic stat_oob, e_a, e_b, e_d, e_sc, e_p1, e_p2, e_nd, e_sc2;
  logic [7:0] chk_err;
  always_comb begin
    // statistics registers gbase .. gbase + groups - 1 must exist
    if (!q.st_chan) stat_oob = 32'(q.gbase) + 32'(q.rows) - 32'd1 >= 32'(NSTAT);
    else stat_oob = 32'(q.gbase) >= 32'(NSTAT) ||
                    32'(q.cols) - 32'd1 >= (32'(NSTAT) - 32'(q.gbase)) * 32'(q.gsize);
    e_a = oob(q.a_base, q.rows, q.a_rs, nl, q.a_act);
    e_b = q.b_en && oob(q.b_base, q.rows, q.b_rs, nl, q.b_act);
    e_d = (q.kind == K_TRANSPOSE) ? oob(q.d_base, q.cols, q.d_rs, nlr, 1'b1)
                                  : oob(q.d_base, q.rows, q.d_rs, nl, q.d_act);
    e_sc = q.sc_en && word_oob(22'(q.sc));
    e_p1 = q.p1_en && prm_oob(q.p1_base, nl);
    e_p2 = q.p2_en && prm_oob(q.p2_base, nl);
    e_nd = q.kind == K_NORM && word_oob(22'(q.nd) + 22'd2);
    e_sc2 = q.sc2_en && word_oob(22'(q.sc2));
    chk_err = ERR_OK;
    unique case (q.kind)
      K_DEQ, K_ADD, K_ACT, K_DEQACT: begin
        if (q.kind == K_ACT && q.st && q.d_act) chk_err = ERR_BAD_FIELD;
        else if (e_a || e_b || e_sc || e_p1 || e_p2 || e_sc2 || e_d) chk_err = ERR_OOB_BUF;
        else if (q.st && stat_oob) chk_err = ERR_OOB_STAT;
      end
      K_NORM: begin
        if (e_a) chk_err = ERR_OOB_BUF;
        else if (stat_oob) chk_err = ERR_OOB_STAT;
        else if (e_nd || e_p1 || e_p2 || e_sc || e_d) chk_err = ERR_OOB_BUF;
      end
      K_GEGLU, K_SOFTMAX, K_TRANSPOSE: if (e_a || e_b || e_sc || e_sc2 || e_d) chk_err = ERR_OOB_BUF;
      default: chk_err = ERR_BAD_OPCODE;
    endcase
  end

  // ---------------------------------------------------------------- state
  typedef enum logic [5:0] {
    S_IDLE, S_CHECK, S_OVL, S_SCAL, S_SCALW, S_NP,
    S_STREAM,
    S_TTILE, S_TRD, S_TWR, S_DONE
  } state_t;
  state_t state;

  logic [LANES-1:0] pend;           // lanes of the pipeline's tail line whose statistics are pending
  // scalars
  logic [31:0] sc_e, inv_n, eps, nsh, sc2_e;
  logic [1:0]  scal_k;
  // softmax row state: max (pass 0), sum of exponentials (pass 1)
  s64 mx, total;
  // norm parameter precompute
  logic [15:0] gi;                  // relative group
  logic [31:0] gcol;                // gi * gsize (chan mode)
  // three stages, one group per cycle: (mu, E[x^2]) -> var -> (rm, re)
  logic        np_v1, np_v2;
  logic [SW-1:0] np_g1, np_g2;
  s64 np_mu1, np_ex2, np_mu2, np_vv;
  // statistics file (valid bit per register: st_clr clears in one cycle)
  s64 st_s1 [NSTAT];
  s64 st_s2 [NSTAT];
  logic [NSTAT-1:0] st_valid;
  // per-group norm parameters of the running instruction (index: group - gbase)
  s64 pt_mu [NSTAT];
  logic [16:0] pt_rm [NSTAT];
  logic signed [5:0] pt_re [NSTAT];
  // transpose
  logic [7:0] tile [LANES][LANES];
  logic [16:0] ti, tj;              // row block, column block
  logic [15:0] trr, tcc, tnr, tnc;  // rows / columns of the tile done and present
  logic [15:0] tq;                  // rows of the tile requested (reads overlap: one per cycle)
  logic [31:0] tsrc, tdst;
  logic [47:0] oa_lo, ob_lo;        // overlap walk: current runs of S and D
  logic [31:0] oa_i, ob_i, oa_n, ob_n;

  // ---------------------------------------------------------------- element-wise pipeline
  // deq, add, act and geglu stream their lines through NSTG compute stages, one line per cycle
  // when the ports allow. Operand slots 0 A, 1 B, 2 prm vector 1 (deq per_ch scale), 3 prm vector
  // 2 (deq bias); each enabled slot has a read walker (its lines in row-major order) and a FIFO of
  // FD lines. A port takes turns between its (at most two) slots and requests one line per cycle
  // while the slot whose turn it is has a credit (reads granted + lines held < FD); responses
  // arrive in order, so they go to the slots in the same turns. A line enters the stages once
  // every slot it needs holds a line; the stages advance together, holding while the last stage
  // (the op's tail) waits for its write grant or walks its statistics groups.
  localparam int FD = 4;            // operand FIFO depth (lines per slot; 2-bit pointers)
  localparam int NSTG = 12;         // compute stages (norm uses all; deq / add the first two)
  // The prm vectors (deq scale and bias) are the same for every row: when a row has at most PCL
  // lines, they are read for the first row only and kept in a cache of PCL lines per vector.
  localparam int PCL = PCACHE_LINES;
  typedef struct packed {
    s64 a, b, x, t, w;              // operands, activation temporaries, result
    logic [31:0] e, bias;           // per-lane scale entry and bias (deq), gamma and beta (norm)
    logic [16:0] rm;                // norm: reciprocal std of the lane's group
    logic signed [5:0] re;
  } lane_t;
  typedef struct packed {
    logic [31:0] daddr;             // result line address
    logic [16:0] cl;                // cols - j*L (valid lanes: l < cl)
    logic [15:0] r;                 // row (row-mode statistics group)
    logic [15:0] cg0;               // chan mode: group of lane 0 and its column within the group
    logic [11:0] crem0;
    logic [1:0]  pass;              // softmax: 0 max, 1 sum of exponentials, 2 probabilities
  } line_t;

  logic        stream_op;
  logic [32:0] slines;              // rows * ceil(cols / L)
  logic [16:0] wj [4];              // read walkers: line within the row of the next read
  logic [31:0] wrow [4];            //   line address of that row
  logic [32:0] wleft [4];           //   reads left
  logic [1:0]  wpass;               //   softmax (slot A only): pass over the row
  logic [2:0]  wcnt [4];            //   credits in use: granted, not yet entered the stages
  logic [2:0]  fcnt [4];            // FIFO: lines held
  logic [1:0]  fwp [4];
  logic [1:0]  frp [4];
  logic [32*LANES-1:0] fq [4][FD];  // lines as 32-bit lanes (act lines sign-extended)
  logic [2:0]  tturn, rturn;        // per port: which of its slots requests / receives next
  line_t       hl;                  // the next line to enter the stages
  logic [16:0] hj;                  //   its line within the row
  logic [31:0] hdrow;               //   its result row address
  logic [32:0] hleft, tleft;        // lines still to enter / to leave the tail
  logic [NSTG-1:0] sv;              // stage holds a line
  line_t       sinfo [NSTG];
  lane_t       sl [NSTG][LANES];
  logic        twr_done;            // the tail's line is written (its statistics may still walk)
  logic [32*LANES-1:0] pcache [2][PCL];

  assign busy = state != S_IDLE;

  // ---------------------------------------------------------------- per-lane combinational
  typedef logic [LANES:0][27:0] gpos_t;   // lane_gpos: {group, column in group} per lane, and of the next line
  logic [LANES-1:0] vmask;          // lanes inside cols
  logic [15:0] lgrp [LANES];        // group of each lane, relative to gbase
  logic [LANES-1:0] gmatch;         // pending lanes of the first pending lane's group
  logic [LANES-1:0] gmatch2;        // and of the next group among the pending lanes
  logic [15:0] gsel, gsel2;
  s64 sum1, sum2, sum1b, sum2b;

  // lanes and statistics groups of the pipeline's tail line
  always_comb begin
    gpos_t pos;
    logic found, found2;
    pos = lane_gpos(sinfo[s_t].cg0, sinfo[s_t].crem0);
    vmask = lane_mask(sinfo[s_t].cl);
    for (int l = 0; l < LANES; l++) lgrp[l] = q.st_chan ? pos[l][27:12] : sinfo[s_t].r;
    // statistics walk of the tail line: two groups per cycle
    found = 1'b0;
    found2 = 1'b0;
    gsel = 16'd0;
    gsel2 = 16'd0;
    for (int l = 0; l < LANES; l++) begin
      if (pend[l] && !found) begin
        found = 1'b1;
        gsel = lgrp[l];
      end else if (pend[l] && !found2 && lgrp[l] != gsel) begin
        found2 = 1'b1;
        gsel2 = lgrp[l];
      end
    end
    for (int l = 0; l < LANES; l++) begin
      gmatch[l] = pend[l] && lgrp[l] == gsel;
      gmatch2[l] = pend[l] && found2 && lgrp[l] == gsel2;
    end
  end

  // statistics sums of the tail line's groups
  always_comb begin
    sum1 = 64'sd0;
    sum2 = 64'sd0;
    sum1b = 64'sd0;
    sum2b = 64'sd0;
    for (int l = 0; l < LANES; l++) begin
      if (gmatch[l]) begin
        sum1 = sum1 + sl[s_t][l].w;
        sum2 = sum2 + sl[s_t][l].w * sl[s_t][l].w;
      end
      if (gmatch2[l]) begin
        sum1b = sum1b + sl[s_t][l].w;
        sum2b = sum2b + sl[s_t][l].w * sl[s_t][l].w;
      end
    end
  end

  // ---------------------------------------------------------------- scalar side
  logic [21:0] scal_word;
  logic [21:0] scal_line;
  logic [LW-1:0] scal_lane;
  logic [31:0] scal_val;
  always_comb begin
    scal_word = (scal_k == 2'd0) ? 22'(q.sc) : q.sc2_en ? 22'(q.sc2) : 22'(q.nd) + 22'(scal_k) - 22'd1;
    scal_line = 22'(32'(scal_word) / 32'(LANES));
    scal_lane = LW'(32'(scal_word) % 32'(LANES));
    scal_val = prm_rd_data[32 * scal_lane +: 32];
  end

  // scalar slots: 0 = PRMW[sc], 1..3 = PRMW[nd .. nd+2] (norm), 1 = PRMW[sc2] (deqact, softmax with pre)
  function automatic logic scal_en(input logic [1:0] k);
    return (k == 2'd0) ? q.sc_en : q.kind == K_NORM || (k == 2'd1 && q.sc2_en);
  endfunction

  function automatic logic slot_en(input logic [1:0] k);
    unique case (k)
      2'd0: return 1'b1;
      2'd1: return q.b_en;
      2'd2: return q.p1_en;
      default: return q.p2_en;
    endcase
  endfunction

  function automatic logic [1:0] slot_port(input logic [1:0] k);
    if (k[1]) return 2'd2;
    return (k[0] ? q.b_act : q.a_act) ? 2'd1 : 2'd0;
  endfunction

  logic [3:0] need;                 // operand slots this instruction reads per line
  logic [2:0] next_scal;            // first enabled scalar slot after scal_k (4: none)
  always_comb begin
    for (int k = 0; k < 4; k++) need[k] = slot_en(2'(k));
    next_scal = 3'd4;
    for (int k = 3; k >= 1; k--) if (k > 32'(scal_k) && scal_en(2'(k))) next_scal = 3'(k);
  end

  // norm parameters of group gbase + gi from its statistics (numerics.norm_params, rsqrt_q)
  logic [SW-1:0] gabs;
  s64 gs1, gs2, np_mu_a, np_ex2_a, var_v, v1, np_vv_b;
  logic [5:0] pk;
  logic signed [7:0] pe;
  logic [63:0] pm;
  logic np_more;                    // groups left to start
  always_comb begin
    gabs = SW'(32'(q.gbase) + 32'(gi));
    gs1 = st_valid[gabs] ? st_s1[gabs] : 64'sd0;
    gs2 = st_valid[gabs] ? st_s2[gabs] : 64'sd0;
    np_more = q.st_chan ? gcol < 32'(q.cols) : gi < q.rows;
    np_mu_a = rsr(gs1 * s64'({32'd0, inv_n}), 40'sd24);
    np_ex2_a = rsr(gs2 * s64'({32'd0, inv_n}), 40'sd32);
    var_v = np_ex2 - rsr(np_mu1 * np_mu1, 40'sd16);
    v1 = ((var_v < 64'sd0) ? 64'sd0 : var_v) + s64'({32'd0, eps});
    np_vv_b = (v1 < 64'sd1) ? 64'sd1 : v1;
    pk = log2floor(np_vv);
    pe = (8'(pk) - 8'sd8) & ~8'sd1;
    pm = (pe >= 8'sd0) ? (np_vv >>> pe) : (np_vv <<< (-pe));
  end

  // ---------------------------------------------------------------- element-wise pipeline logic
  // One stage of one lane: the numerics.py expressions, a multiply and a rounding shift at most per
  // stage. Stages: deq / add 0-1; norm 0-3 (the normalization) then 4-11 like act; act and geglu
  // 3-11 (3 saturate, 4-8 hard SiLU / GeLU, 9 geglu product, 10 output scale, 11 saturate); deqact
  // 0-1 like deq, 2 passes, 3 takes deq's result as act's input, 4-11 like act (scale PRMW[sc2]);
  // act without fn enters at 9. For norm: b = mu, e = gamma, bias = beta of the lane.
  function automatic lane_t stage_fn(input int k, input lane_t i, input logic [1:0] lpass);
    lane_t o;
    int kk;
    o = i;
    if (q.kind == K_SOFTMAX) begin
      // softmax_q: u = -apply_scale(x - max, e); ex = 2**(-u/256) (Q15); p = min(127, ex * rl * 127 >> 15+k);
      // with pre, stage 0 first puts the scores on their grid (as a deq) and the rest runs a stage later
      kk = q.sc2_en ? k - 1 : k;
      if (kk < 0) begin
        o.a = sat16(rsr(i.a * e_mul(sc2_e), e_sh(sc2_e)));
        return o;
      end
      unique case (kk)
        0: if (lpass != 2'd0) o.w = rsr((i.a - mx) * e_mul(sc_e), e_sh(sc_e));
        1: o.t = exp2_q15(i.w);
        2: o.w = i.t * s64'({48'd0, sm_rl_c});
        default: begin
          o.w = rsr(i.w * s64'(SOFTMAX_ONE), 40'sd15 + 40'(sm_k_c));
          if (o.w > 64'sd127) o.w = 64'sd127;
        end
      endcase
      return o;
    end
    unique case (k)
      0: unique case (q.kind)
           K_DEQ, K_DEQACT: o.w = rsr(i.a * e_mul(i.e), e_sh(i.e));         // apply_scale(S, E_c)
           K_ADD: o.w = rsr(i.b * e_mul(sc_e), e_sh(sc_e));                // apply_scale(B, e)
           default: o.w = (sat16(i.a) <<< NORM_MEAN_FRAC) - i.b;           // norm: d = x * 2**8 - mu
         endcase
      1: unique case (q.kind)
           K_DEQ, K_DEQACT: o.w = sat16(i.w + (q.p2_en ? s64'(signed'(i.bias)) : 64'sd0));
           K_ADD: o.w = sat16(i.a + i.w);
           default: o.w = rsr(i.w * s64'({47'd0, i.rm}), 40'sd16);           // norm: t
         endcase
      2: if (q.kind == K_NORM) o.w = rsr(i.w * s64'(signed'(i.e)), 40'(signed'(nsh)) + 40'(i.re));  // * gamma
      3: if (q.kind == K_NORM) begin o.x = sat16(i.w + s64'(signed'(i.bias))); o.w = o.x; end   // + beta
         else if (q.kind == K_ACT) begin o.x = sat16(i.a); o.w = o.x; end
         else if (q.kind == K_DEQACT) o.x = i.w;                         // deq's result (int16)
         else begin o.x = sat16(i.b); o.w = o.x; o.a = sat16(i.a); end     // geglu: gate B
      4: if (q.fn == FN_SILU) o.t = clip(i.x + (64'sd3 <<< q.frac), 64'sd0, 64'sd6 <<< q.frac);
         else if (q.fn == FN_GELU) o.w = rsr(i.x * s64'(GELU_ALPHA_Q10), 40'sd10);
      5: if (q.fn == FN_GELU) o.t = clip(i.w + (64'sd3 <<< q.frac), 64'sd0, 64'sd6 <<< q.frac);
      6: if (q.fn != FN_NONE) o.w = i.x * i.t;
      7: if (q.fn != FN_NONE) o.w = i.w * s64'(INV6_Q16);
      8: if (q.fn != FN_NONE) o.w = rsr(i.w, 40'(q.frac) + 40'sd16);
      9: if (q.kind == K_GEGLU) o.w = rsr(i.a * i.w, 40'(q.frac));             // A * gelu(B)
         else if (q.kind == K_ACT && q.fn == FN_NONE) o.w = sat16(i.a);       // act, fn none: enters here
      10: o.w = (q.kind == K_DEQACT) ? rsr(i.w * e_mul(sc2_e), e_sh(sc2_e))   // output scale
                                     : rsr(i.w * e_mul(sc_e), e_sh(sc_e));
      default: o.w = q.d_act ? sat8(i.w) : sat16(i.w);
    endcase
    return o;
  endfunction

  // chan mode: {group, column in the group} of each lane of a line whose lane 0 is at (g0, rem0), and in
  // slot LANES that of the next line's lane 0 (the ripple continues)
  function automatic gpos_t lane_gpos(input logic [15:0] g0, input logic [11:0] rem0);
    gpos_t pos;
    logic [15:0] g;
    logic [11:0] rem;
    g = g0;
    rem = rem0;
    for (int l = 0; l <= LANES; l++) begin
      pos[l] = {g, rem};
      if (rem + 12'd1 == q.gsize) begin
        rem = 12'd0;
        g = g + 16'd1;
      end else begin
        rem = rem + 12'd1;
      end
    end
    return pos;
  endfunction

  function automatic logic [LANES-1:0] lane_mask(input logic [16:0] cl);
    logic [LANES-1:0] m;
    for (int l = 0; l < LANES; l++) m[l] = 17'(l) < cl;
    return m;
  endfunction

  // softmax: 2**(-u/256) in Q15 of w = -u <= 0 (numerics.softmax_q); k and rl of the row's sum
  function automatic s64 exp2_q15(input s64 wv);
    s64 u, qq;
    u = -wv;
    qq = u >>> EXP_FRAC;
    if (qq > 64'sd31) qq = 64'sd31;
    return rsr(s64'({48'd0, EXP2_LUT[u[7:0]]}), 40'(qq));
  endfunction

  logic [5:0]  sm_k_c;              // floor(log2 total) (total: constant while pass 2 streams)
  logic [15:0] sm_rl_c;             // RECIP[(total >> (k - 9)) - 512]
  s64          sline_max, sex_sum;  // the row's max (pass 0) / sum of exponentials (pass 1) with the tail line
  always_comb begin
    logic [63:0] m;
    sm_k_c = log2floor(total);
    m = 64'(total) >> (sm_k_c - 6'd9);
    sm_rl_c = RECIP_LUT[9'(m - 64'd512)];
    // a row's first line starts the max (pass 0) and the sum (pass 1) afresh
    sline_max = (sinfo[s_t].cl == 17'(q.cols)) ? -64'sd2147483648 : mx;
    sex_sum = (sinfo[s_t].cl == 17'(q.cols)) ? 64'sd0 : total;
    for (int l = 0; l < LANES; l++) begin
      if (17'(l) < sinfo[s_t].cl && sl[s_t][l].a > sline_max) sline_max = sl[s_t][l].a;
      if (17'(l) < sinfo[s_t].cl) sex_sum = sex_sum + sl[s_t][l].t;
    end
  end

  logic [3:0]  s_e, s_t;            // entry and tail stage of the running op
  logic [1:0]  ps0 [3];             // per port: its first and second slot, and how many
  logic [1:0]  ps1 [3];
  logic [1:0]  pn [3];
  logic [1:0]  scur [3];            // slot whose turn it is to request / to receive
  logic [1:0]  rcur [3];
  logic [2:0]  sreq, svalid, sgnt;
  logic [31:0] saddr [3];
  logic [3:0]  sinc, swr, spk;      // per slot: a read granted / a line arriving / a line taken
  logic [32*LANES-1:0] sdata [3];   // arriving line per port as 32-bit lanes
  logic        spop, sadv, sleave, swreq, swr_ok, sstat_ok;
  logic        pc_en, pc_hit;       // prm vectors cached; the next line takes them from the cache
  logic [32*LANES-1:0] hp [2];      // the next line's prm vectors
  lane_t       sin [NSTG][LANES];
  lane_t       sout [NSTG][LANES];
  line_t       sinfo_in [NSTG];
  logic [NSTG-1:0] sv_in;
  logic [31:0] tdaddr;              // the tail line's result address
  logic [27:0] hgpos;
  gpos_t hpos;
  logic        setup;               // scalar reads and norm parameters: acc / act reads may start
  logic [15:0] hgrp [LANES];        // norm: group of each lane of the next line (relative to gbase)
  assign setup = state == S_SCAL || state == S_SCALW || state == S_NP;
  assign stream_op = q.kind != K_TRANSPOSE && q.kind != K_BAD;
  assign slines = 33'(q.rows) * 33'(nl);
  assign pc_en = 32'(nl) <= 32'(PCL);
  assign s_t = (q.kind == K_DEQ || q.kind == K_ADD) ? 4'd1 : (q.kind == K_SOFTMAX) ? (q.sc2_en ? 4'd4 : 4'd3)
             : 4'(NSTG - 1);
  assign s_e = (q.kind == K_ACT && q.fn == FN_NONE) ? 4'd9 :
               (q.kind == K_ACT || q.kind == K_GEGLU) ? 4'd3 : 4'd0;
  assign tdaddr = sinfo[s_t].daddr;
  always_comb begin
    for (int p = 0; p < 3; p++) begin
      ps0[p] = 2'd0;
      ps1[p] = 2'd0;
      pn[p] = 2'd0;
      for (int k = 0; k < 4; k++) begin
        if (need[k] && slot_port(2'(k)) == 2'(p)) begin
          if (pn[p] == 2'd0) ps0[p] = 2'(k);
          else ps1[p] = 2'(k);
          pn[p] = pn[p] + 2'd1;
        end
      end
      scur[p] = tturn[p] ? ps1[p] : ps0[p];
      rcur[p] = rturn[p] ? ps1[p] : ps0[p];
      sreq[p] = stream_op && pn[p] != 2'd0 && wleft[scur[p]] != 33'd0 && wcnt[scur[p]] < 3'(FD) &&
                (state == S_STREAM || (p != 2 && setup));
      saddr[p] = wrow[scur[p]] + 32'(wj[scur[p]]);
    end
    swreq = state == S_STREAM && sv[s_t] && !twr_done && (q.kind != K_SOFTMAX || sinfo[s_t].pass == 2'd2);
  end

  // (separate blocks: the requests above are functions of registered state only; grants may be
  // combinational from them)
  always_comb begin
    sgnt = {prm_rd_gnt, act_rd_gnt, acc_rd_gnt} & sreq;
    svalid[0] = acc_rd_valid && stream_op && (state == S_STREAM || setup);
    svalid[1] = act_rd_valid && stream_op && (state == S_STREAM || setup);
    svalid[2] = prm_rd_valid && stream_op && state == S_STREAM;
    sdata[0] = acc_rd_data;
    sdata[2] = prm_rd_data;
    for (int l = 0; l < LANES; l++) sdata[1][32 * l +: 32] = 32'(signed'(act_rd_data[8 * l +: 8]));
    for (int k = 0; k < 4; k++) begin
      sinc[k] = sgnt[slot_port(2'(k))] && scur[slot_port(2'(k))] == 2'(k);
      swr[k] = svalid[slot_port(2'(k))] && rcur[slot_port(2'(k))] == 2'(k);
    end

    // the tail: write its line, walk its statistics groups (one per cycle), then leave
    swr_ok = twr_done || (swreq && (q.d_act ? act_wr_gnt : acc_wr_gnt)) ||
             (q.kind == K_SOFTMAX && sinfo[s_t].pass != 2'd2);     // softmax passes 0, 1 write nothing
    sstat_ok = (pend & ~gmatch & ~gmatch2) == '0;
    sleave = sv[s_t] && swr_ok && sstat_ok;
    sadv = !sv[s_t] || sleave;
    spop = state == S_STREAM && hleft != 33'd0 && sadv &&
           !(q.kind == K_SOFTMAX && hj == 17'd0 && hl.pass != 2'd0 && sv != '0);   // softmax: passes 1, 2
                                                                      // start once the previous pass has left
    pc_hit = pc_en && hl.r != 16'd0;
    for (int k = 0; k < 4; k++) if (need[k] && fcnt[k] == 3'd0 && !(k >= 2 && pc_hit)) spop = 1'b0;
    spk = need & {4{spop}} & {!pc_hit, !pc_hit, 2'b11};
    for (int k = 0; k < 2; k++) hp[k] = pc_hit ? pcache[k][$clog2(PCL)'(hj)] : fq[k + 2][frp[k + 2]];
    hpos = lane_gpos(hl.cg0, hl.crem0);
    hgpos = hpos[LANES];
    for (int l = 0; l < LANES; l++) hgrp[l] = q.st_chan ? hpos[l][27:12] : hl.r;
  end

  always_comb begin

    for (int k = 0; k < NSTG; k++) begin
      sinfo_in[k] = (k == 32'(s_e)) ? hl : sinfo[(k + NSTG - 1) % NSTG];
      for (int l = 0; l < LANES; l++) begin
        if (k == 32'(s_e)) begin
          sin[k][l] = '0;
          sin[k][l].a = s64'(signed'(fq[0][frp[0]][32 * l +: 32]));
          sin[k][l].b = s64'(signed'(fq[1][frp[1]][32 * l +: 32]));
          sin[k][l].e = q.p1_en ? hp[0][32 * l +: 32] : sc_e;
          sin[k][l].bias = hp[1][32 * l +: 32];
          if (q.kind == K_NORM) begin
            sin[k][l].b = pt_mu[SW'(hgrp[l])];
            sin[k][l].rm = pt_rm[SW'(hgrp[l])];
            sin[k][l].re = pt_re[SW'(hgrp[l])];
          end
        end else begin
          sin[k][l] = sl[(k + NSTG - 1) % NSTG][l];
        end
        sout[k][l] = stage_fn(k, sin[k][l], sinfo_in[k].pass);
      end
      sv_in[k] = (k == 32'(s_e)) ? spop : (k > 32'(s_e) && k <= 32'(s_t) && sv[(k + NSTG - 1) % NSTG]);
    end
  end

  // ---------------------------------------------------------------- outputs to the buffers
  always_comb begin
    acc_rd_req = sreq[0];
    acc_rd_addr = ACCW'(saddr[0]);
    act_rd_req = sreq[1] || (state == S_TRD && tq < tnr);
    act_rd_addr = ACTW'((state == S_TRD) ? tsrc : saddr[1]);
    prm_rd_req = sreq[2] || state == S_SCAL;
    prm_rd_addr = PRMW'((state == S_SCAL) ? 32'(scal_line) : saddr[2]);

    acc_wr_req = swreq && !q.d_act;
    acc_wr_addr = ACCW'(tdaddr);
    act_wr_req = (swreq && q.d_act) || state == S_TWR;
    act_wr_addr = ACTW'((state == S_TWR) ? tdst : tdaddr);
    for (int l = 0; l < LANES; l++) begin
      logic [31:0] v;
      v = sl[s_t][l].w[31:0];
      acc_wr_data[32 * l +: 32] = v;
      act_wr_data[8 * l +: 8] = (state == S_TWR) ? tile[l][LW'(tcc)] : v[7:0];
      act_wr_be[l] = (state == S_TWR) ? 16'(l) < tnr : vmask[l];
    end
    acc_wr_be = vmask;
  end

  assign stat_rd_s1 = st_valid[stat_idx] ? st_s1[stat_idx] : 64'sd0;
  assign stat_rd_s2 = st_valid[stat_idx] ? st_s2[stat_idx] : 64'sd0;

  // ---------------------------------------------------------------- the FSM
  always_ff @(posedge clk) begin
    done <= 1'b0;
    if (rst) begin
      state <= S_IDLE;
      error <= 1'b0;
      err_code <= ERR_OK;
      st_valid <= '0;
      pend <= '0;
      sv <= '0;
    end else begin
      unique case (state)
        S_IDLE: begin
          if (start) begin
            q <= dec;
            error <= 1'b0;
            err_code <= ERR_OK;
            state <= S_CHECK;
          end else if (stat_wr) begin
            st_s1[stat_idx] <= stat_wr_s1;
            st_s2[stat_idx] <= stat_wr_s2;
            st_valid[stat_idx] <= 1'b1;
          end
        end

        S_CHECK: begin
          for (int k = 0; k < 4; k++) begin
            wj[k] <= 17'd0;
            wleft[k] <= !need[k] ? 33'd0 : (k >= 2 && pc_en) ? 33'(nl) : (q.kind == K_SOFTMAX) ? 3 * slines : slines;
            wcnt[k] <= 3'd0;
            fcnt[k] <= 3'd0;
            fwp[k] <= 2'd0;
            frp[k] <= 2'd0;
          end
          wrow[0] <= 32'(q.a_base);
          wrow[1] <= 32'(q.b_base);
          wrow[2] <= 32'(q.p1_base);
          wrow[3] <= 32'(q.p2_base);
          tturn <= 3'd0;
          rturn <= 3'd0;
          hl <= '{daddr: 32'(q.d_base), cl: 17'(q.cols), r: 16'd0, cg0: 16'd0, crem0: 12'd0, pass: 2'd0};
          hj <= 17'd0;
          hdrow <= 32'(q.d_base);
          hleft <= (q.kind == K_SOFTMAX) ? 3 * slines : slines;
          tleft <= (q.kind == K_SOFTMAX) ? 3 * slines : slines;
          wpass <= 2'd0;
          sv <= '0;
          twr_done <= 1'b0;
          pend <= '0;
          mx <= -64'sd2147483648;
          total <= 64'sd0;
          gi <= 16'd0;
          gcol <= 32'd0;
          np_v1 <= 1'b0;
          np_v2 <= 1'b0;
          if (chk_err != ERR_OK) begin
            error <= 1'b1;
            err_code <= chk_err;
            state <= S_DONE;
          end else if (q.kind == K_TRANSPOSE) begin
            oa_lo <= 48'(q.a_base);
            ob_lo <= 48'(q.d_base);
            oa_i <= 32'd0;
            ob_i <= 32'd0;
            oa_n <= (q.a_rs == 16'd0) ? 32'd1 : 32'(q.rows);
            ob_n <= (q.d_rs == 16'd0) ? 32'd1 : 32'(q.cols);
            tj <= 17'd0;
            ti <= nlr - 17'd1;
            // disjoint hulls need no walk
            if (last_line(q.a_base, q.rows, q.a_rs, nl) < 48'(q.d_base) ||
                last_line(q.d_base, q.cols, q.d_rs, nlr) < 48'(q.a_base)) state <= S_TTILE;
            else state <= S_OVL;
          end else begin
            if (q.st_clr) st_valid <= '0;
            scal_k <= 2'd0;
            if (q.sc_en) state <= S_SCAL;
            else if (q.kind == K_NORM || q.sc2_en) begin
              scal_k <= 2'd1;
              state <= S_SCAL;
            end else state <= S_STREAM;
          end
        end

        // transpose overlap: merge walk over the sorted runs of S (rows) and D (columns)
        S_OVL: begin
          if (oa_lo + 48'(nl) - 48'd1 < ob_lo) begin
            if (oa_i + 32'd1 >= oa_n) state <= S_TTILE;
            oa_i <= oa_i + 32'd1;
            oa_lo <= oa_lo + 48'(q.a_rs);
          end else if (ob_lo + 48'(nlr) - 48'd1 < oa_lo) begin
            if (ob_i + 32'd1 >= ob_n) state <= S_TTILE;
            ob_i <= ob_i + 32'd1;
            ob_lo <= ob_lo + 48'(q.d_rs);
          end else begin
            error <= 1'b1;
            err_code <= ERR_OVERLAP;
            state <= S_DONE;
          end
        end

        // scalar prm words
        S_SCAL: if (prm_rd_gnt) state <= S_SCALW;
        S_SCALW: begin
          if (prm_rd_valid) begin
            unique case (scal_k)
              2'd0: sc_e <= scal_val;
              2'd1: if (q.sc2_en) sc2_e <= scal_val; else inv_n <= scal_val;
              2'd2: eps <= scal_val;
              default: nsh <= scal_val;
            endcase
            if (next_scal != 3'd4) begin
              scal_k <= 2'(next_scal);
              state <= S_SCAL;
            end else if (q.kind == K_NORM) state <= S_NP;
            else state <= S_STREAM;
          end
        end

        // norm: (mu, rm, re) of every group the instruction uses
        S_NP: begin
          np_v1 <= np_more;
          if (np_more) begin
            np_mu1 <= np_mu_a;
            np_ex2 <= np_ex2_a;
            np_g1 <= SW'(gi);
            gi <= gi + 16'd1;
            gcol <= gcol + 32'(q.gsize);
          end
          np_v2 <= np_v1;
          np_mu2 <= np_mu1;
          np_vv <= np_vv_b;
          np_g2 <= np_g1;
          if (np_v2) begin
            pt_mu[np_g2] <= np_mu2;
            pt_rm[np_g2] <= RSQRT_LUT[10'(pm - 64'd256)];
            pt_re[np_g2] <= 6'(pe >>> 1);
          end
          if (!np_more && !np_v1) state <= S_STREAM;   // the last group's parameters are written now
        end

        // element-wise pipeline: stages, next line to enter, tail (statistics, write, leave)
        S_STREAM: begin
          if (sadv) begin
            sv <= sv_in;
            for (int k = 0; k < NSTG; k++) begin
              sinfo[k] <= sinfo_in[k];
              for (int l = 0; l < LANES; l++) sl[k][l] <= sout[k][l];
            end
          end
          if (spop) begin
            if (!pc_hit) for (int k = 0; k < 2; k++) pcache[k][$clog2(PCL)'(hj)] <= hp[k];
            hleft <= hleft - 33'd1;
            if (32'(hj) + 32'd1 < 32'(nl)) begin
              hj <= hj + 17'd1;
              hl.cl <= hl.cl - 17'(LANES);
              {hl.cg0, hl.crem0} <= hgpos;
              hl.daddr <= hl.daddr + 32'd1;
            end else if (q.kind == K_SOFTMAX && hl.pass != 2'd2) begin
              hj <= 17'd0;
              hl.cl <= 17'(q.cols);
              hl.daddr <= hdrow;
              hl.pass <= hl.pass + 2'd1;
            end else begin
              hl.pass <= 2'd0;
              hj <= 17'd0;
              hl.cl <= 17'(q.cols);
              hl.r <= hl.r + 16'd1;
              hl.cg0 <= 16'd0;
              hl.crem0 <= 12'd0;
              hl.daddr <= hdrow + 32'(q.d_rs);
              hdrow <= hdrow + 32'(q.d_rs);
            end
          end
          if (sv[s_t] && pend != '0) begin
            logic [SW-1:0] g, g2;
            g = SW'(32'(q.gbase) + 32'(gsel));
            g2 = SW'(32'(q.gbase) + 32'(gsel2));
            st_s1[g] <= (st_valid[g] ? st_s1[g] : 64'sd0) + sum1;
            st_s2[g] <= (st_valid[g] ? st_s2[g] : 64'sd0) + sum2;
            st_valid[g] <= 1'b1;
            if (gmatch2 != '0) begin
              st_s1[g2] <= (st_valid[g2] ? st_s1[g2] : 64'sd0) + sum1b;
              st_s2[g2] <= (st_valid[g2] ? st_s2[g2] : 64'sd0) + sum2b;
              st_valid[g2] <= 1'b1;
            end
            pend <= pend & ~gmatch & ~gmatch2;
          end
          if (sadv) pend <= (sv_in[s_t] && q.st) ? lane_mask(sinfo_in[s_t].cl) : '0;
          if (sleave && q.kind == K_SOFTMAX) begin
            if (sinfo[s_t].pass == 2'd0) mx <= sline_max;
            if (sinfo[s_t].pass == 2'd1) total <= sex_sum;
          end
          if (sleave) begin
            twr_done <= 1'b0;
            tleft <= tleft - 33'd1;
            if (tleft == 33'd1) state <= S_DONE;
          end else if (swr_ok) twr_done <= 1'b1;
        end


        // transpose: tiles of L source rows x L columns; column blocks ascending, row blocks
        // descending, columns ascending within a tile (the golden model's last-write-wins order
        // when result rows alias)
        S_TTILE: begin
          tnr <= 16'((32'(q.rows) - 32'(ti) * 32'(LANES) > 32'(LANES)) ? 32'(LANES)
                                                                      : 32'(q.rows) - 32'(ti) * 32'(LANES));
          tnc <= 16'((32'(q.cols) - 32'(tj) * 32'(LANES) > 32'(LANES)) ? 32'(LANES)
                                                                      : 32'(q.cols) - 32'(tj) * 32'(LANES));
          trr <= 16'd0;
          tq <= 16'd0;
          tcc <= 16'd0;
          tsrc <= 32'(q.a_base) + 32'(ti) * 32'(LANES) * 32'(q.a_rs) + 32'(tj);
          tdst <= 32'(q.d_base) + 32'(tj) * 32'(LANES) * 32'(q.d_rs) + 32'(ti);
          state <= S_TRD;
        end
        S_TRD: begin
          if (tq < tnr && act_rd_gnt) begin
            tq <= tq + 16'd1;
            tsrc <= tsrc + 32'(q.a_rs);
          end
          if (act_rd_valid) begin
            for (int l = 0; l < LANES; l++) tile[LW'(trr)][l] <= act_rd_data[8 * l +: 8];
            trr <= trr + 16'd1;
            if (trr + 16'd1 >= tnr) state <= S_TWR;
          end
        end
        S_TWR: begin
          if (act_wr_gnt) begin
            tcc <= tcc + 16'd1;
            tdst <= tdst + 32'(q.d_rs);
            if (tcc + 16'd1 >= tnc) begin
              if (ti != 17'd0) begin
                ti <= ti - 17'd1;
                state <= S_TTILE;
              end else if (tj + 17'd1 < nl) begin
                tj <= tj + 17'd1;
                ti <= nlr - 17'd1;
                state <= S_TTILE;
              end else state <= S_DONE;
            end
          end
        end

        S_DONE: begin
          done <= 1'b1;
          state <= S_IDLE;
        end
        default: state <= S_IDLE;
      endcase
      // element-wise pipeline: read walkers (their ports run from S_SCAL on) and operand FIFOs
      for (int p = 0; p < 3; p++) begin
        if (sgnt[p]) tturn[p] <= (pn[p] == 2'd2) ? !tturn[p] : 1'b0;
        if (svalid[p]) rturn[p] <= (pn[p] == 2'd2) ? !rturn[p] : 1'b0;
      end
      for (int k = 0; k < 4; k++) begin
        if (sinc[k]) begin
          wleft[k] <= wleft[k] - 33'd1;
          if (32'(wj[k]) + 32'd1 < 32'(nl)) wj[k] <= wj[k] + 17'd1;
          else if (k == 0 && q.kind == K_SOFTMAX && wpass != 2'd2) begin
            wj[k] <= 17'd0;                     // the same row again
            wpass <= wpass + 2'd1;
          end else begin
            wj[k] <= 17'd0;
            wpass <= 2'd0;
            wrow[k] <= wrow[k] + ((k == 0) ? 32'(q.a_rs) : (k == 1) ? 32'(q.b_rs) : 32'd0);
          end
        end
        if (sinc[k] || spk[k]) wcnt[k] <= wcnt[k] + 3'(sinc[k]) - 3'(spk[k]);
        if (swr[k] || spk[k]) fcnt[k] <= fcnt[k] + 3'(swr[k]) - 3'(spk[k]);
        if (swr[k]) begin
          fq[k][fwp[k]] <= sdata[slot_port(2'(k))];
          fwp[k] <= fwp[k] + 2'd1;
        end
        if (spk[k]) frp[k] <= frp[k] + 2'd1;
      end
    end
  end
`undef SFU_F
endmodule
