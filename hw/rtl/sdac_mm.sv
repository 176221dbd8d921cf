// mm and conv execution on the systolic array (output stationary): C (+)= A x W.
//
// The output is cut into 2X-row x L-column tiles (this unit needs 2Y == L, so
// one tile column is one acc line). Per tile it streams k cycles into
// sdac_array (A column kk: one lane of 2X act lines; W row kk: one wgt line)
// into one of the array's two accumulator sets (tile j: set j % 2) and goes
// on with the next tile; once a tile's sums are final (the array's last_out)
// its rows are written into acc, one per cycle, while the next tile streams
// (read-modify-write: lanes n' >= n keep their value, acc=1 adds). Tile j + 2
// reuses the set of tile j: it starts once tile j's write-out is X - 5 rows
// ahead of its clear wave (see set_free).
// Bounds are checked first in the golden model's order (A, W, C): an
// out-of-range instruction finishes with OOB_BUF and changes nothing.
// int8 W (wsrc = act: W row kk is one act line; act_t: W[kk, c] is lane kk%L
// of a separate act line per column) runs as two passes per tile: the signed
// high nibble (written as 16 * P), then the unsigned low nibble (0..15, a
// 5-bit PE weight) added: C = 16 * (A x Wh) + A x Wl = A x W, modulo 2^32.
// conv with df = os runs as the same output-stationary product: rows are
// output pixels (oh*ow), columns output channels, the reduction runs over
// (tap, cin) with the input pixel of each tap (zero outside the input, implicit
// padding) as A and wgt line w + block*wbs + tap*wts + ci as W. The per-row
// address arithmetic (pixel -> oy, ox) is behavioural, for simulation.
//
// conv with df = ws runs weight-stationary (sdac_array's WS mode): jobs of
// (output-channel block nb of L channels, chunk of at most PT output pixels),
// nb outer. Per job, blocks (tap, input-channel block cb of X channels) each
// hold an X x 2Y weight block in the PEs (X wgt lines, one per cycle, into the
// shadow weights while the previous block streams) and stream the chunk's
// pixels two per cycle: a block takes max(ceil(pixels / 2), X) cycles. The
// array's sums over the X channels are added into a partial-sum memory of the
// job (int32, wrapping: the golden model's sums modulo 2^32), bank job % 2.
// The bank drains into acc one pixel (line) per cycle (lanes >= cout keep
// their value, acc = 1 adds) as soon as the job's last block has written the
// pixel, overlapping that block and the next job, which streams into the
// other bank; what remains after the last job's stream is about half its
// pixels. Chunks are balanced (ceil(P / ceil(P / PT)) pixels) so that each
// streams at least PT / 4 = X cycles per block once P > PT: the weight loads
// stay hidden.
// `unsup` is kept for instruction kinds this unit may not cover (none now).
module sdac_mm
  import sdac_isa_pkg::*;
#(
  parameter int LANES = L,
  parameter int X = ARRAY_ROWS,
  parameter int Y = ARRAY_COLS,
  parameter int ACT_N = ACT_LINES,
  parameter int WGT_N = WGT_LINES,
  parameter int ACC_N = ACC_LINES
) (
  input  logic                       clk,
  input  logic                       rst,
  input  logic                       start,
  /* verilator lint_off UNUSEDSIGNAL */
  input  logic [WORD_BITS-1:0]       word,      // stable from start to fin (mm / conv)
  /* verilator lint_on UNUSEDSIGNAL */
  output logic                       busy,
  output logic                       fin,       // one-cycle pulse: done (err / unsup valid)
  output logic [7:0]                 err,
  output logic                       unsup,
  output logic [$clog2(ACT_N)-1:0]   act_raddr [2*X],
  input  logic [8*LANES-1:0]         act_rdata [2*X],
  output logic [$clog2(WGT_N)-1:0]   wgt_raddr,
  input  logic [4*LANES-1:0]         wgt_rdata,
  output logic [$clog2(ACT_N)-1:0]   wact_raddr [LANES],   // W from act (one line per column)
  input  logic [8*LANES-1:0]         wact_rdata [LANES],
  output logic [$clog2(ACC_N)-1:0]   acc_raddr,
  input  logic [32*LANES-1:0]        acc_rdata,
  output logic                       acc_we,
  output logic [$clog2(ACC_N)-1:0]   acc_waddr,
  output logic [32*LANES-1:0]        acc_wdata
);
`define SDAC_F(INSTR, FIELD) word[F_``INSTR``_``FIELD``_LO +: F_``INSTR``_``FIELD``_W]
  localparam int TM = 2 * X;
  localparam int PT = 4 * X;                 // WS: output pixels per job (partial-sum memory depth per bank)
  initial begin
    if (2 * Y != LANES) $error("sdac_mm needs 2*Y == lanes (one acc line per tile row)");
  end

  // Instruction fields
  logic [63:0] fa, fars, fw, fws, fc, fcrs, fm, fn, fk;
  logic [1:0] wsrc;
  logic facc;
  assign fa = 64'(`SDAC_F(MM, A));
  assign fars = 64'(`SDAC_F(MM, ARS));
  assign fw = 64'(`SDAC_F(MM, W));
  assign fws = 64'(`SDAC_F(MM, WS));
  assign fc = 64'(`SDAC_F(MM, C));
  assign fcrs = 64'(`SDAC_F(MM, CRS));
  assign fm = 64'(`SDAC_F(MM, M));
  assign fn = 64'(`SDAC_F(MM, N));
  assign fk = 64'(`SDAC_F(MM, K));
  assign wsrc = `SDAC_F(MM, WSRC);
  assign facc = `SDAC_F(MM, ACC);

  logic is_conv;
  assign is_conv = word[F_OPCODE_LO +: F_OPCODE_W] == OP_CONV;
  logic [63:0] vi, vips, virs, vih, viw, vw, vwbs, vwts, vo, vops, vors, voh, vow, vcin, vcout, vst, vpt, vpl;
  logic vacc, is_ws;
  assign is_ws = is_conv && `SDAC_F(CONV, DF) == DATAFLOW_WS;
  assign vi = 64'(`SDAC_F(CONV, I));
  assign vips = 64'(`SDAC_F(CONV, IPS));
  assign virs = 64'(`SDAC_F(CONV, IRS));
  assign vih = 64'(`SDAC_F(CONV, IH));
  assign viw = 64'(`SDAC_F(CONV, IW));
  assign vw = 64'(`SDAC_F(CONV, W));
  assign vwbs = 64'(`SDAC_F(CONV, WBS));
  assign vwts = 64'(`SDAC_F(CONV, WTS));
  assign vo = 64'(`SDAC_F(CONV, O));
  assign vops = 64'(`SDAC_F(CONV, OPS));
  assign vors = 64'(`SDAC_F(CONV, ORS));
  assign voh = 64'(`SDAC_F(CONV, OH));
  assign vow = 64'(`SDAC_F(CONV, OW));
  assign vcin = 64'(`SDAC_F(CONV, CIN));
  assign vcout = 64'(`SDAC_F(CONV, COUT));
  assign vst = 64'(`SDAC_F(CONV, STRIDE));
  assign vpt = 64'(`SDAC_F(CONV, PT));
  assign vpl = 64'(`SDAC_F(CONV, PL));
  assign vacc = `SDAC_F(CONV, ACC);

  // The product actually run: em x ek times ek x en.
  logic [63:0] em, en, ek;
  logic eacc;
  logic [1:0] ewsrc;
  assign em = is_conv ? voh * vow : fm;
  assign en = is_conv ? vcout : fn;
  assign ek = is_conv ? 64'd9 * vcin : fk;
  assign eacc = is_conv ? vacc : facc;
  assign ewsrc = is_conv ? WSRC_WGT : wsrc;

  // conv bounds, in the golden model's order: weights, input (the part the taps reach), output
  logic [63:0] c_blocks, cin_lines, hp, wp, ny_in, nx_in, last_cw, last_ci, last_co;
  assign c_blocks = (vcout + 64'(LANES) - 64'd1) / 64'(LANES);
  assign cin_lines = (vcin + 64'(LANES) - 64'd1) / 64'(LANES);
  assign hp = (voh - 64'd1) * vst + 64'd3;
  assign wp = (vow - 64'd1) * vst + 64'd3;
  assign ny_in = vih < hp - vpt ? vih : hp - vpt;
  assign nx_in = viw < wp - vpl ? viw : wp - vpl;
  assign last_cw = vw + (c_blocks - 64'd1) * vwbs + 64'd8 * vwts + vcin - 64'd1;
  assign last_ci = vi + (ny_in - 64'd1) * virs + (nx_in - 64'd1) * vips + cin_lines - 64'd1;
  assign last_co = vo + (voh - 64'd1) * vors + (vow - 64'd1) * vops + c_blocks - 64'd1;

  logic [63:0] n_blocks, k_lines, n_lines, last_a, last_w, last_c;
  assign n_blocks = (en + 64'(LANES) - 64'd1) / 64'(LANES);
  assign k_lines = (fk + 64'(LANES) - 64'd1) / 64'(LANES);
  assign last_a = fa + (fm - 64'd1) * fars + k_lines - 64'd1;
  assign n_lines = n_blocks;
  always_comb begin
    unique case (wsrc)
      WSRC_WGT: last_w = fw + (n_blocks - 64'd1) * fws + fk - 64'd1;
      WSRC_ACT: last_w = fw + (fk - 64'd1) * fws + n_lines - 64'd1;
      default:  last_w = fw + (fn - 64'd1) * fws + k_lines - 64'd1;
    endcase
  end
  logic [63:0] w_limit;
  assign w_limit = wsrc == WSRC_WGT ? 64'(WGT_N) : 64'(ACT_N);
  assign last_c = fc + (fm - 64'd1) * fcrs + n_blocks - 64'd1;

  typedef enum logic [2:0] {M_IDLE, M_CHECK, M_STREAM, M_SWAIT, M_FLUSH, M_WS} state_t;
  state_t state;
  logic [63:0] i0, nb, kk, k_line, k_lane, r;
  logic [63:0] tap, ci;   // conv: kernel tap (0..8) and input channel of step kk
  logic pass_hi;      // int8 W: first pass (high nibble); the second pass takes the low nibble
  // Output-stationary pipeline: tiles (passes) streamed, final (last_out seen) and written out; the
  // tile being written is the oldest not written, n_read, with the fields saved when it streamed.
  logic [63:0] n_str, n_final, n_read;
  // Saved fields of tiles streamed and not yet written: at most three (j - 2 being written, j - 1, j).
  logic [63:0] t_i0 [4];
  logic [63:0] t_nb [4];
  logic t_hi [4];
  logic [63:0] h_i0, h_nb;
  logic h_hi, writing;
  assign h_i0 = t_i0[n_read[1:0]];
  assign h_nb = t_nb[n_read[1:0]];
  assign h_hi = t_hi[n_read[1:0]];
  assign writing = (state == M_STREAM || state == M_SWAIT || state == M_FLUSH) && n_final > n_read;
  // May tile j stream from the next cycle on? It reuses the accumulator set of tile j - 2: that tile is
  // written, or its write-out is far enough that tile j's clear, passing PE row x in cycle s + x + 5
  // (s: tile j's first cycle), stays behind the reads of row pair x (cycles c0 + 2x, c0 + 2x + 1; c0: the
  // write-out's first cycle): s >= c0 + X - 5, i.e. row r = s - 1 - c0 >= X - 6 now (one cycle spare).
  function automatic logic set_free(input logic [63:0] j);
    return j - n_read < 64'd2 || (j - n_read == 64'd2 && writing && r + 64'd5 >= 64'(X));
  endfunction
  logic two_pass;
  assign two_pass = ewsrc != WSRC_WGT;

  // Array
  logic in_valid, in_clr, idle, in_last, last_out;
  logic signed [TM-1:0][7:0] a_col;
  logic signed [2*Y-1:0][4:0] w_row;
  logic [$clog2(TM)-1:0] rd_row;
  logic signed [2*Y-1:0][31:0] rd_data;
  logic ws_mode, w_ld, ws_valid;
  logic [(X > 1 ? $clog2(X) : 1)-1:0] w_ld_row;
  logic signed [2*Y-1:0][31:0] ws_out0, ws_out1;
  sdac_array #(.X(X), .Y(Y), .ACC_W(32)) u_array (
    .clk, .rst, .in_valid, .in_clr, .in_bank(n_str[0]), .in_last, .last_out, .rd_bank(n_read[0]),
    .a_col, .w_row, .rd_row, .rd_data, .idle,
    .ws(ws_mode), .w_ld, .w_ld_row, .ws_valid, .ws_out0, .ws_out1
  );

  // ---------------------------------------------------------------- CONV-WS
  typedef enum logic [1:0] {W_PRE, W_RUN, W_WAIT, W_FLUSH} ws_state_t;
  ws_state_t wst;
  assign ws_mode = state == M_WS;
  // Shape of the instruction (fields are stable during it)
  logic [63:0] ncb, nblk, npix, nch, pc, njobs;
  assign ncb = (vcin + 64'(X) - 64'd1) / 64'(X);
  assign nblk = 64'd9 * ncb;
  assign npix = voh * vow;
  assign nch = (npix + 64'(PT) - 64'd1) / 64'(PT);
  assign pc = (npix + nch - 64'd1) / nch;
  assign njobs = c_blocks * nch;
  function automatic logic [63:0] chunk_pixels(input logic [63:0] ch);
    return ch + 64'd1 == nch ? npix - ch * pc : pc;
  endfunction
  function automatic logic [63:0] chunk_pairs(input logic [63:0] ch);
    return (chunk_pixels(ch) + 64'd1) >> 1;
  endfunction
  function automatic logic [63:0] chunk_period(input logic [63:0] ch);
    return chunk_pairs(ch) > 64'(X) ? chunk_pairs(ch) : 64'(X);
  endfunction

  // Stream side: job s_job = (s_nb, s_ch), block (s_tap, s_cb), cycle s_c of the block's period; p0 of
  // the pair streamed this cycle at (py, px), pixel 2 * s_c of the chunk.
  logic [63:0] s_job, s_nb, s_ch, s_tap, s_cb, s_c, py, px, s_cnt, s_pairs, s_period, cy, cx;
  assign s_cnt = chunk_pixels(s_ch);
  assign s_pairs = chunk_pairs(s_ch);
  assign s_period = chunk_period(s_ch);
  assign cy = s_ch * pc / vow;
  assign cx = s_ch * pc % vow;
  // p1 = the pixel after p0; the pair after this one starts at the pixel after p1
  logic [63:0] py1, px1, py2, px2;
  assign py1 = px + 64'd1 == vow ? py + 64'd1 : py;
  assign px1 = px + 64'd1 == vow ? 64'd0 : px + 64'd1;
  assign py2 = px1 + 64'd1 == vow ? py1 + 64'd1 : py1;
  assign px2 = px1 + 64'd1 == vow ? 64'd0 : px1 + 64'd1;
  logic ws_streaming;
  assign ws_streaming = ws_mode && wst == W_RUN && s_c < s_pairs;
  // The block loaded now (into the shadow weights): in W_PRE the first, in W_RUN the one after (s_tap, s_cb).
  logic last_blk, last_job, l_any, l_valid;
  logic [63:0] l_nb, l_tap, l_cb, l_ci;
  assign last_blk = s_tap == 64'd8 && s_cb + 64'd1 == ncb;
  assign last_job = s_job + 64'd1 == njobs;
  always_comb begin
    l_nb = s_nb;
    l_tap = s_tap;
    l_cb = s_cb;
    l_any = 1'b1;
    if (wst != W_PRE) begin
      if (s_cb + 64'd1 < ncb) l_cb = s_cb + 64'd1;
      else begin
        l_cb = '0;
        if (s_tap < 64'd8) l_tap = s_tap + 64'd1;
        else begin
          l_tap = '0;
          l_any = !last_job;
          if (s_ch + 64'd1 == nch) l_nb = s_nb + 64'd1;
        end
      end
    end
  end
  assign l_ci = l_cb * 64'(X) + s_c;
  assign l_valid = ws_mode && (wst == W_PRE || wst == W_RUN) && s_c < 64'(X) && l_any;
  assign w_ld = l_valid;
  assign w_ld_row = $bits(w_ld_row)'(s_c);
  // the next job's bank is free once the job that used it before has drained
  logic [63:0] d_job;
  logic bank_free;
  assign bank_free = s_job + 64'd1 < 64'd2 || d_job >= s_job;

  // Output side: pair o_q of block o_blk of job o_job = (o_nb, o_ch) arrives with ws_valid.
  logic [63:0] o_job, o_ch, o_q, o_blk;
  logic signed [31:0] psum [2][PT][LANES];
  // Drain side: pixel d_k of job d_job = (d_nb, d_ch) into acc.
  logic [63:0] d_nb, d_ch, d_k, d_pix, d_y, d_x;
  logic draining;
  // A pixel drains once its sum is final: its job is complete, or the job's last block has written it
  // (the drain, one pixel per cycle, then follows the last block's two pixels per cycle).
  assign draining = ws_mode && (d_job < o_job || (d_job == o_job && o_blk + 64'd1 == nblk && d_k < 2 * o_q));
  assign d_pix = d_ch * pc + d_k;
  assign d_y = d_pix / vow;
  assign d_x = d_pix % vow;

  assign in_valid = state == M_STREAM || ws_streaming;
  assign in_last = state == M_STREAM && kk + 64'd1 == ek;
  logic unused_idle;
  assign unused_idle = idle;           // tiles complete by last_out (the array may already hold the next)
  assign in_clr = ws_mode ? s_c == 64'd0 : kk == 64'd0;
  // conv: pixel of each array row and of the write-back row
  function automatic logic [63:0] pix_y(input logic [63:0] p);
    return p / vow;
  endfunction
  function automatic logic [63:0] pix_x(input logic [63:0] p);
    return p % vow;
  endfunction
  logic [63:0] tap_y, tap_x;
  assign tap_y = tap / 64'd3;
  assign tap_x = tap % 64'd3;

  // Read addresses (one always_comb) and the operands from the read data (another), so the
  // buffer read path through the top level is not a combinational loop.
  logic [TM-1:0] row_ok;
  always_comb begin
    for (int row = 0; row < TM; row++) begin
      logic [63:0] p, iy, ix;
      p = i0 + 64'(row);
      // unsigned wrap-around makes rows above / left of the input (padding) compare as >= ih / iw
      iy = pix_y(p) * vst + tap_y - vpt;
      ix = pix_x(p) * vst + tap_x - vpl;
      if (is_conv) begin
        act_raddr[row] = $clog2(ACT_N)'(vi + iy * virs + ix * vips + k_line);
        row_ok[row] = p < em && iy < vih && ix < viw;
      end else begin
        act_raddr[row] = $clog2(ACT_N)'(fa + p * fars + k_line);
        row_ok[row] = p < em;
      end
    end
    wgt_raddr = is_conv ? $clog2(WGT_N)'(vw + nb * vwbs + tap * vwts + ci) : $clog2(WGT_N)'(fw + nb * fws + kk);
    // pixel pair: row x of the array reads input channel s_cb * X + x of p0 (port 2x) and p1 (port 2x+1)
    for (int x = 0; x < X; x++) begin
      logic [63:0] wci, iy0, ix0, iy1, ix1;
      wci = s_cb * 64'(X) + 64'(x);
      iy0 = py * vst + s_tap / 64'd3 - vpt;
      ix0 = px * vst + s_tap % 64'd3 - vpl;
      iy1 = py1 * vst + s_tap / 64'd3 - vpt;
      ix1 = px1 * vst + s_tap % 64'd3 - vpl;
      if (ws_mode) begin
        act_raddr[2 * x] = $clog2(ACT_N)'(vi + iy0 * virs + ix0 * vips + wci / 64'(LANES));
        act_raddr[2 * x + 1] = $clog2(ACT_N)'(vi + iy1 * virs + ix1 * vips + wci / 64'(LANES));
        row_ok[2 * x] = 2 * s_c < s_cnt && iy0 < vih && ix0 < viw && wci < vcin;
        row_ok[2 * x + 1] = 2 * s_c + 64'd1 < s_cnt && iy1 < vih && ix1 < viw && wci < vcin;
      end
    end
    if (ws_mode) begin
      wgt_raddr = $clog2(WGT_N)'(l_ci < vcin ? vw + l_nb * vwbs + l_tap * vwts + l_ci : vw);
    end
    for (int c = 0; c < LANES; c++)
      wact_raddr[c] = $clog2(ACT_N)'(wsrc == WSRC_ACT ? fw + kk * fws + nb
                                                       : fw + (nb * 64'(LANES) + 64'(c)) * fws + k_line);
  end
  always_comb begin
    for (int row = 0; row < TM; row++) begin
      logic [$clog2(LANES)-1:0] lane;
      lane = ws_mode ? $clog2(LANES)'((s_cb * 64'(X) + 64'(row / 2)) % 64'(LANES)) : k_lane[$clog2(LANES)-1:0];
      a_col[row] = row_ok[row] ? act_rdata[row][8 * lane +: 8] : 8'sd0;
    end
    for (int c = 0; c < 2 * Y; c++) begin
      logic [7:0] v;
      v = wsrc == WSRC_ACT ? wact_rdata[0][8 * c +: 8] : wact_rdata[c][8 * k_lane[$clog2(LANES)-1:0] +: 8];
      if (ws_mode) w_row[c] = l_ci < vcin ? 5'(signed'(wgt_rdata[4 * c +: 4])) : 5'sd0;
      else if (ewsrc == WSRC_WGT) w_row[c] = 5'(signed'(wgt_rdata[4 * c +: 4]));
      else if (pass_hi) w_row[c] = 5'(signed'(v[7:4]));
      else w_row[c] = {1'b0, v[3:0]};
    end
  end

  // Write-back of tile row r: lanes beyond n keep their old value.
  assign rd_row = $clog2(TM)'(r);
  assign acc_raddr = ws_mode ? $clog2(ACC_N)'(vo + d_y * vors + d_x * vops + d_nb)
                    : is_conv ? $clog2(ACC_N)'(vo + pix_y(h_i0 + r) * vors + pix_x(h_i0 + r) * vops + h_nb)
                              : $clog2(ACC_N)'(fc + (h_i0 + r) * fcrs + h_nb);
  assign acc_waddr = acc_raddr;
  assign acc_we = writing || draining;
  always_comb begin
    for (int j = 0; j < LANES; j++) begin
      logic [31:0] old_v;
      old_v = acc_rdata[32 * j +: 32];
      // first (or only) pass: start from the old value (acc) or zero; later: add to it
      if (ws_mode)
        acc_wdata[32 * j +: 32] = d_nb * 64'(LANES) + 64'(j) < vcout
                                  ? (vacc ? old_v : 32'd0) + psum[d_job[0]][d_k[$clog2(PT)-1:0]][j] : old_v;
      else if (h_nb * 64'(LANES) + 64'(j) < en)
        acc_wdata[32 * j +: 32] = (eacc || (two_pass && !h_hi) ? old_v : 32'd0)
                                  + (two_pass && h_hi ? rd_data[j] <<< 4 : rd_data[j]);
      else
        acc_wdata[32 * j +: 32] = old_v;
    end
  end

  logic tile_last_row, last_tile;
  assign tile_last_row = r == 64'(TM - 1) || h_i0 + r + 64'd1 >= em;
  assign last_tile = nb + 64'd1 >= n_blocks && i0 + 64'(TM) >= em;
  assign busy = state != M_IDLE;

  always_ff @(posedge clk) begin
    fin <= 1'b0;
    unique case (state)
      M_IDLE: if (start) state <= M_CHECK;
      M_CHECK: begin
        err <= ERR_OK;
        unsup <= 1'b0;
        i0 <= '0;
        nb <= '0;
        kk <= '0;
        k_line <= '0;
        k_lane <= '0;
        r <= '0;
        pass_hi <= 1'b1;
        tap <= '0;
        ci <= '0;
        n_str <= '0;
        n_final <= '0;
        n_read <= '0;
        if (is_conv) begin
          if (last_cw >= 64'(WGT_N) || (ny_in != 64'd0 && nx_in != 64'd0 && last_ci >= 64'(ACT_N))
              || last_co >= 64'(ACC_N)) begin
            err <= ERR_OOB_BUF; fin <= 1'b1; state <= M_IDLE;
          end else if (is_ws) begin
            state <= M_WS;
            wst <= W_PRE;
            s_job <= '0; s_nb <= '0; s_ch <= '0; s_tap <= '0; s_cb <= '0; s_c <= '0;
            py <= '0; px <= '0;
            o_job <= '0; o_ch <= '0; o_q <= '0; o_blk <= '0;
            d_job <= '0; d_nb <= '0; d_ch <= '0; d_k <= '0;
          end else state <= M_STREAM;
        end else if (last_a >= 64'(ACT_N)) begin
          err <= ERR_OOB_BUF; fin <= 1'b1; state <= M_IDLE;
        end else if (wsrc == 2'd3) begin
          unsup <= 1'b1; fin <= 1'b1; state <= M_IDLE;   // not a member: the decoder rejects it
        end else if (last_w >= w_limit || last_c >= 64'(ACC_N)) begin
          err <= ERR_OOB_BUF; fin <= 1'b1; state <= M_IDLE;
        end else state <= M_STREAM;
      end
      M_STREAM: begin
        kk <= kk + 64'd1;
        if (is_conv && ci + 64'd1 == vcin) begin      // next tap, channel 0
          ci <= '0;
          tap <= tap + 64'd1;
          k_lane <= '0;
          k_line <= '0;
        end else begin
          ci <= ci + 64'd1;
          if (k_lane == 64'(LANES - 1)) begin
            k_lane <= '0;
            k_line <= k_line + 64'd1;
          end else k_lane <= k_lane + 64'd1;
        end
        if (kk + 64'd1 == ek) begin                    // tile (pass) streamed: save it, go on
          t_i0[n_str[1:0]] <= i0;
          t_nb[n_str[1:0]] <= nb;
          t_hi[n_str[1:0]] <= pass_hi;
          n_str <= n_str + 64'd1;
          kk <= '0;
          k_line <= '0;
          k_lane <= '0;
          tap <= '0;
          ci <= '0;
          state <= set_free(n_str + 64'd1) ? M_STREAM : M_SWAIT;
          if (two_pass && pass_hi) begin
            pass_hi <= 1'b0;            // same tile again, low nibble
          end else if (last_tile) begin
            state <= M_FLUSH;
          end else begin
            pass_hi <= 1'b1;
            if (nb + 64'd1 < n_blocks) nb <= nb + 64'd1;
            else begin
              nb <= '0;
              i0 <= i0 + 64'(TM);
            end
          end
        end
      end
      M_SWAIT: if (set_free(n_str)) state <= M_STREAM;
      default: ;                                         // M_FLUSH: the writes below finish
    endcase
    // Write-out of the oldest finished tile, one row per cycle, overlapping the streaming of the next.
    if (last_out && state != M_WS) n_final <= n_final + 64'd1;
    if (writing) begin
      r <= r + 64'd1;
      if (tile_last_row) begin
        r <= '0;
        n_read <= n_read + 64'd1;
        if (state == M_FLUSH && n_read + 64'd1 == n_str) begin
          fin <= 1'b1;
          state <= M_IDLE;
        end
      end
    end
    unique case (state)
      M_WS: begin
        // stream side
        unique case (wst)
          W_PRE: begin                       // load the first block
            s_c <= s_c + 64'd1;
            if (s_c + 64'd1 == 64'(X)) begin
              s_c <= '0;
              wst <= W_RUN;
            end
          end
          W_RUN: begin
            s_c <= s_c + 64'd1;
            if (ws_streaming) begin
              py <= py2;
              px <= px2;
            end
            if (s_c + 64'd1 == s_period) begin        // block done
              s_c <= '0;
              py <= cy;
              px <= cx;
              if (!last_blk) begin
                if (s_cb + 64'd1 < ncb) s_cb <= s_cb + 64'd1;
                else begin
                  s_cb <= '0;
                  s_tap <= s_tap + 64'd1;
                end
              end else if (last_job) begin
                wst <= W_FLUSH;
              end else begin                            // next job (its first block is already loaded)
                s_tap <= '0;
                s_cb <= '0;
                s_job <= s_job + 64'd1;
                if (s_ch + 64'd1 == nch) begin
                  s_ch <= '0;
                  s_nb <= s_nb + 64'd1;
                  py <= '0;
                  px <= '0;
                end else begin
                  s_ch <= s_ch + 64'd1;
                  py <= (s_ch + 64'd1) * pc / vow;
                  px <= (s_ch + 64'd1) * pc % vow;
                end
                if (!bank_free) wst <= W_WAIT;
              end
            end
          end
          W_WAIT: if (d_job + 64'd1 >= s_job) wst <= W_RUN;
          default: ;                                   // W_FLUSH: outputs and drain finish below
        endcase
        // output side: add the block's sums into the job's bank
        if (ws_valid) begin
          for (int j = 0; j < LANES; j++) begin
            psum[o_job[0]][2 * o_q[$clog2(PT)-1:0]][j] <=
                (o_blk == 64'd0 ? 32'sd0 : psum[o_job[0]][2 * o_q[$clog2(PT)-1:0]][j]) + ws_out0[j];
            psum[o_job[0]][2 * o_q[$clog2(PT)-1:0] + 1][j] <=
                (o_blk == 64'd0 ? 32'sd0 : psum[o_job[0]][2 * o_q[$clog2(PT)-1:0] + 1][j]) + ws_out1[j];
          end
          o_q <= o_q + 64'd1;
          if (o_q + 64'd1 == chunk_pairs(o_ch)) begin
            o_q <= '0;
            o_blk <= o_blk + 64'd1;
            if (o_blk + 64'd1 == nblk) begin
              o_blk <= '0;
              o_job <= o_job + 64'd1;
              o_ch <= o_ch + 64'd1 == nch ? 64'd0 : o_ch + 64'd1;
            end
          end
        end
        // drain side: one pixel of a finished job per cycle into acc
        if (draining) begin
          d_k <= d_k + 64'd1;
          if (d_k + 64'd1 == chunk_pixels(d_ch)) begin
            d_k <= '0;
            d_job <= d_job + 64'd1;
            if (d_ch + 64'd1 == nch) begin
              d_ch <= '0;
              d_nb <= d_nb + 64'd1;
            end else d_ch <= d_ch + 64'd1;
            if (d_job + 64'd1 == njobs) begin
              fin <= 1'b1;
              state <= M_IDLE;
            end
          end
        end
      end
      default: ;
    endcase
    if (rst) begin
      state <= M_IDLE;
      fin <= 1'b0;
      err <= ERR_OK;
      unsup <= 1'b0;
    end
  end
`undef SDAC_F
endmodule
