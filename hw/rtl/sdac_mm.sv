// mm and conv execution on the systolic array (output stationary): C (+)= A x W.
//
// The output is cut into 2X-row x L-column tiles (this unit needs 2Y == L, so
// one tile column is one acc line). Per tile it streams k cycles into
// sdac_array (A column kk: one lane of 2X act lines; W row kk: one wgt line),
// waits until the array is idle, then writes the tile row by row into acc
// (read-modify-write: lanes n' >= n keep their value, acc=1 adds).
// Bounds are checked first in the golden model's order (A, W, C): an
// out-of-range instruction finishes with OOB_BUF and changes nothing.
// int8 W (wsrc = act: W row kk is one act line; act_t: W[kk, c] is lane kk%L
// of a separate act line per column) runs as two passes per tile: the signed
// high nibble (written as 16 * P), then the unsigned low nibble (0..15, a
// 5-bit PE weight) added: C = 16 * (A x Wh) + A x Wl = A x W, modulo 2^32.
// conv runs as the same output-stationary product: rows are output pixels
// (oh*ow), columns output channels, the reduction runs over (tap, cin) with the
// input pixel of each tap (zero outside the input, implicit padding) as A and
// wgt line w + block*wbs + tap*wts + ci as W; df (ws / os) is timing only in
// the ISA and both run this way here. The per-row address arithmetic (pixel ->
// oy, ox) is behavioural, for simulation.
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
  logic vacc;
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

  typedef enum logic [2:0] {M_IDLE, M_CHECK, M_STREAM, M_DRAIN, M_WRITE} state_t;
  state_t state;
  logic [63:0] i0, nb, kk, k_line, k_lane, r;
  logic [63:0] tap, ci;   // conv: kernel tap (0..8) and input channel of step kk
  logic pass_hi;      // int8 W: first pass (high nibble); the second pass takes the low nibble
  logic two_pass;
  assign two_pass = ewsrc != WSRC_WGT;

  // Array
  logic in_valid, in_clr, idle;
  logic signed [TM-1:0][7:0] a_col;
  logic signed [2*Y-1:0][4:0] w_row;
  logic [$clog2(TM)-1:0] rd_row;
  logic signed [2*Y-1:0][31:0] rd_data;
  sdac_array #(.X(X), .Y(Y), .ACC_W(32)) u_array (
    .clk, .rst, .in_valid, .in_clr, .a_col, .w_row, .rd_row, .rd_data, .idle
  );

  assign in_valid = state == M_STREAM;
  assign in_clr = kk == 64'd0;
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
    for (int c = 0; c < LANES; c++)
      wact_raddr[c] = $clog2(ACT_N)'(wsrc == WSRC_ACT ? fw + kk * fws + nb
                                                       : fw + (nb * 64'(LANES) + 64'(c)) * fws + k_line);
  end
  always_comb begin
    for (int row = 0; row < TM; row++)
      a_col[row] = row_ok[row] ? act_rdata[row][8 * k_lane[$clog2(LANES)-1:0] +: 8] : 8'sd0;
    for (int c = 0; c < 2 * Y; c++) begin
      logic [7:0] v;
      v = wsrc == WSRC_ACT ? wact_rdata[0][8 * c +: 8] : wact_rdata[c][8 * k_lane[$clog2(LANES)-1:0] +: 8];
      if (ewsrc == WSRC_WGT) w_row[c] = 5'(signed'(wgt_rdata[4 * c +: 4]));
      else if (pass_hi) w_row[c] = 5'(signed'(v[7:4]));
      else w_row[c] = {1'b0, v[3:0]};
    end
  end

  // Write-back of tile row r: lanes beyond n keep their old value.
  assign rd_row = $clog2(TM)'(r);
  assign acc_raddr = is_conv ? $clog2(ACC_N)'(vo + pix_y(i0 + r) * vors + pix_x(i0 + r) * vops + nb)
                             : $clog2(ACC_N)'(fc + (i0 + r) * fcrs + nb);
  assign acc_waddr = acc_raddr;
  assign acc_we = state == M_WRITE && i0 + r < em;
  always_comb begin
    for (int j = 0; j < LANES; j++) begin
      logic [31:0] old_v;
      old_v = acc_rdata[32 * j +: 32];
      // first (or only) pass: start from the old value (acc) or zero; later: add to it
      if (nb * 64'(LANES) + 64'(j) < en)
        acc_wdata[32 * j +: 32] = (eacc || (two_pass && !pass_hi) ? old_v : 32'd0)
                                  + (two_pass && pass_hi ? rd_data[j] <<< 4 : rd_data[j]);
      else
        acc_wdata[32 * j +: 32] = old_v;
    end
  end

  logic tile_last_row, last_tile;
  assign tile_last_row = r == 64'(TM - 1) || i0 + r + 64'd1 >= em;
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
        if (is_conv) begin
          if (last_cw >= 64'(WGT_N) || (ny_in != 64'd0 && nx_in != 64'd0 && last_ci >= 64'(ACT_N))
              || last_co >= 64'(ACC_N)) begin
            err <= ERR_OOB_BUF; fin <= 1'b1; state <= M_IDLE;
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
        if (kk + 64'd1 == ek) state <= M_DRAIN;
      end
      M_DRAIN: if (idle) begin
        r <= '0;
        state <= M_WRITE;
      end
      M_WRITE: begin
        r <= r + 64'd1;
        if (tile_last_row) begin
          kk <= '0;
          k_line <= '0;
          k_lane <= '0;
          tap <= '0;
          ci <= '0;
          if (two_pass && pass_hi) begin
            pass_hi <= 1'b0;            // same tile again, low nibble
            state <= M_STREAM;
          end else if (last_tile) begin
            fin <= 1'b1;
            state <= M_IDLE;
          end else begin
            state <= M_STREAM;
            pass_hi <= 1'b1;
            if (nb + 64'd1 < n_blocks) nb <= nb + 64'd1;
            else begin
              nb <= '0;
              i0 <= i0 + 64'(TM);
            end
          end
        end
      end
      default: state <= M_IDLE;
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
