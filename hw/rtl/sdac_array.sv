// Output-stationary systolic array (MM-OS): X x Y PEs compute a 2X x 2Y tile
//   C[r, c] (+)= sum_k A[r, k] * W[k, c]      r < 2X, c < 2Y
// with int8 A, 5-bit signed W (int4 weights, or a nibble of an int8 W: see
// sdac_mm) and 32-bit wrapping accumulators, one k per cycle.
//
// Each cycle with in_valid the caller presents column k of the A tile (a_col[r]
// = A[r, k]) and row k of the W tile (w_row[c] = W[k, c]); in_clr on the first
// k of a tile starts new sums, otherwise the products add to what the PEs hold
// (this is the instruction's `acc` and the k-split of long reductions).
// PE (x, y) owns rows 2x, 2x+1 and columns 2y, 2y+1. The edge skews A row-pair x
// by x cycles and W column-pair y by y cycles; activations (with in_valid /
// in_clr) then move one PE right per cycle and weights one PE down, so PE (x, y)
// meets A[., k] and W[k, .] in the same cycle.
//
// Results: `idle` is high once no operand is in flight; then rd_data holds row
// rd_row of C (combinational read mux, one row of 2Y accumulators).
// Two accumulator sets: in_bank (with each operand) picks the set a tile
// accumulates in, rd_bank the set rd_data reads, so a finished tile can be
// read out while the next streams. last_out rises Y + 4 cycles after an
// operand given with in_last: from the next cycle on, rows read one per cycle
// in order are final (row pair x is final x + 1 cycles after last_out).
//
// Weight-stationary mode (ws = 1, CONV-WS): PE (x, y) holds the weights of
// input channel x for output channels 2y, 2y+1 (an X x 2Y block) and each
// valid cycle brings two output pixels: a_col[2x] / a_col[2x+1] = input
// channel x of pixel p0 / p1 (same edge skew as MM-OS). Partial sums flow
// down the columns, so ws_out0 / ws_out1 (pixels p0 / p1, 2Y channels) are
// sum_x a * W over the block, WS_LATENCY cycles after the operands, with
// ws_valid. Block load: w_ld with w_row = weights of input channel w_ld_row
// (one line, 2Y output channels) goes down the columns into the shadow weights
// of row w_ld_row; in_clr on the first pixel pair of a block swaps them in.
// Giving row x's line at cycle s + x, a block loaded from s may be swapped in
// from s + X on, and loading the next block may begin in the cycle of the
// swap: with shadow weights, one block per max(pixel pairs, X) cycles.
module sdac_array #(
  parameter int X = 20,
  parameter int Y = 10,
  parameter int ACC_W = 32,
  localparam int RW = X > 1 ? $clog2(X) : 1     // width of a row index
) (
  input  logic                         clk,
  input  logic                         rst,
  input  logic                         in_valid,
  input  logic                         in_clr,
  input  logic                         in_bank,
  input  logic                         in_last,
  output logic                         last_out,
  input  logic                         rd_bank,
  input  logic signed [2*X-1:0][7:0]   a_col,
  input  logic signed [2*Y-1:0][4:0]   w_row,
  input  logic [$clog2(2*X)-1:0]       rd_row,
  output logic signed [2*Y-1:0][ACC_W-1:0] rd_data,
  output logic                         idle,
  // weight-stationary mode
  input  logic                         ws,
  input  logic                         w_ld,
  input  logic [RW-1:0]                w_ld_row,
  output logic                         ws_valid,
  output logic signed [2*Y-1:0][ACC_W-1:0] ws_out0,
  output logic signed [2*Y-1:0][ACC_W-1:0] ws_out1
);
  localparam int PE_LATENCY = 6;               // sdac_pe: operands -> accumulators
  localparam int DEPTH = X + Y + PE_LATENCY;   // last operand in -> last accumulator written

  // Horizontal (activation + control) and vertical (weight) links. h*[x][y] feeds PE (x, y);
  // column Y is the unused output of the last PE of a row, row X that of a column.
  logic signed [7:0] h_a0 [X][Y+1];
  logic signed [7:0] h_a1 [X][Y+1];
  logic              h_en [X][Y+1];
  logic              h_clr [X][Y+1];
  logic              h_bank [X][Y+1];
  logic signed [4:0] v_w0 [X+1][Y];
  logic signed [4:0] v_w1 [X+1][Y];
  logic signed [ACC_W-1:0] acc [X][Y][4];
  logic signed [ACC_W-1:0] acc_b1 [X][Y][4];

  // Left edge: row pair x delayed by x cycles.
  for (genvar x = 0; x < X; x++) begin : g_row_skew
    if (x == 0) begin : g_direct
      assign h_a0[x][0] = a_col[0];
      assign h_a1[x][0] = a_col[1];
      assign h_en[x][0] = in_valid;
      assign h_clr[x][0] = in_clr;
      assign h_bank[x][0] = in_bank;
    end else begin : g_delay
      logic signed [7:0] d_a0 [x];
      logic signed [7:0] d_a1 [x];
      logic d_en [x];
      logic d_clr [x];
      logic d_bank [x];
      always_ff @(posedge clk) begin
        d_a0[0] <= a_col[2*x];
        d_a1[0] <= a_col[2*x+1];
        d_en[0] <= in_valid;
        d_clr[0] <= in_clr;
        d_bank[0] <= in_bank;
        for (int s = 1; s < x; s++) begin
          d_a0[s] <= d_a0[s-1];
          d_a1[s] <= d_a1[s-1];
          d_en[s] <= d_en[s-1];
          d_clr[s] <= d_clr[s-1];
          d_bank[s] <= d_bank[s-1];
        end
        if (rst) for (int s = 0; s < x; s++) d_en[s] <= 1'b0;
      end
      assign h_a0[x][0] = d_a0[x-1];
      assign h_a1[x][0] = d_a1[x-1];
      assign h_en[x][0] = d_en[x-1];
      assign h_clr[x][0] = d_clr[x-1];
      assign h_bank[x][0] = d_bank[x-1];
    end
  end

  // Top edge: column pair y delayed by y cycles (with the WS load tag).
  logic          v_ld [X][Y];
  logic [RW-1:0] v_row [X][Y];
  for (genvar y = 0; y < Y; y++) begin : g_col_skew
    if (y == 0) begin : g_direct
      assign v_w0[0][y] = w_row[0];
      assign v_w1[0][y] = w_row[1];
      assign v_ld[0][y] = w_ld;
      assign v_row[0][y] = w_ld_row;
    end else begin : g_delay
      logic signed [4:0] d_w0 [y];
      logic signed [4:0] d_w1 [y];
      logic d_ld [y];
      logic [RW-1:0] d_row [y];
      always_ff @(posedge clk) begin
        d_w0[0] <= w_row[2*y];
        d_w1[0] <= w_row[2*y+1];
        d_ld[0] <= w_ld;
        d_row[0] <= w_ld_row;
        for (int s = 1; s < y; s++) begin
          d_w0[s] <= d_w0[s-1];
          d_w1[s] <= d_w1[s-1];
          d_ld[s] <= d_ld[s-1];
          d_row[s] <= d_row[s-1];
        end
        if (rst) for (int s = 0; s < y; s++) d_ld[s] <= 1'b0;
      end
      assign v_w0[0][y] = d_w0[y-1];
      assign v_w1[0][y] = d_w1[y-1];
      assign v_ld[0][y] = d_ld[y-1];
      assign v_row[0][y] = d_row[y-1];
    end
  end
  // The load tag follows the weights down a column (one row per cycle, as the PEs forward w).
  for (genvar x = 1; x < X; x++) begin : g_ld_down
    for (genvar y = 0; y < Y; y++) begin : g_y
      always_ff @(posedge clk) begin
        v_ld[x][y] <= v_ld[x-1][y];
        v_row[x][y] <= v_row[x-1][y];
        if (rst) v_ld[x][y] <= 1'b0;
      end
    end
  end

  logic pe_valid [X][Y];
  for (genvar x = 0; x < X; x++) begin : g_x
    for (genvar y = 0; y < Y; y++) begin : g_y
      // WS partial sums from the PE above (zero into the top row)
      logic signed [ACC_W-1:0] ps [4];
      if (x == 0) begin : g_top
        assign ps = '{default: '0};
      end else begin : g_below
        assign ps = acc[x-1][y];
      end
      sdac_pe #(.ACC_W(ACC_W)) u_pe (
        .clk, .rst,
        .en(h_en[x][y]), .clr(h_clr[x][y]), .bank(h_bank[x][y]), .bank_out(h_bank[x][y+1]),
        .a0(h_a0[x][y]), .a1(h_a1[x][y]), .w0(v_w0[x][y]), .w1(v_w1[x][y]),
        .ws, .wcap(v_ld[x][y] && 32'(v_row[x][y]) == x),
        .ps00(ps[0]), .ps01(ps[1]), .ps10(ps[2]), .ps11(ps[3]),
        .a0_out(h_a0[x][y+1]), .a1_out(h_a1[x][y+1]),
        .w0_out(v_w0[x+1][y]), .w1_out(v_w1[x+1][y]),
        .en_out(h_en[x][y+1]), .clr_out(h_clr[x][y+1]),
        .acc_valid(pe_valid[x][y]),
        .acc00(acc[x][y][0]), .acc01(acc[x][y][1]), .acc10(acc[x][y][2]), .acc11(acc[x][y][3]),
        .acc00_b1(acc_b1[x][y][0]), .acc01_b1(acc_b1[x][y][1]), .acc10_b1(acc_b1[x][y][2]), .acc11_b1(acc_b1[x][y][3])
      );
    end
  end
  // Outputs of the last PE in each row / column go nowhere.
  logic unused_edges;
  always_comb begin
    unused_edges = 1'b0;
    for (int x = 0; x < X; x++)
      unused_edges ^= ^{h_a0[x][Y], h_a1[x][Y], h_en[x][Y], h_clr[x][Y], h_bank[x][Y]};
    for (int y = 0; y < Y; y++)
      unused_edges ^= ^{v_w0[X][y], v_w1[X][y]};
  end

  // WS results: the bottom row's sums; column pair y is ready y cycles after column pair 0, so it is
  // delayed by Y - 1 - y cycles to present one whole output pixel pair per cycle.
  logic ws_v [Y];
  for (genvar y = 0; y < Y; y++) begin : g_ws_out
    localparam int D = Y - 1 - y;
    if (D == 0) begin : g_direct
      assign ws_v[y] = pe_valid[X-1][y];
      assign ws_out0[2*y] = acc[X-1][y][0];
      assign ws_out0[2*y+1] = acc[X-1][y][1];
      assign ws_out1[2*y] = acc[X-1][y][2];
      assign ws_out1[2*y+1] = acc[X-1][y][3];
    end else begin : g_delay
      logic d_v [D];
      logic signed [ACC_W-1:0] d_s [D][4];
      always_ff @(posedge clk) begin
        d_v[0] <= pe_valid[X-1][y];
        d_s[0] <= acc[X-1][y];
        for (int s = 1; s < D; s++) begin
          d_v[s] <= d_v[s-1];
          d_s[s] <= d_s[s-1];
        end
        if (rst) for (int s = 0; s < D; s++) d_v[s] <= 1'b0;
      end
      assign ws_v[y] = d_v[D-1];
      assign ws_out0[2*y] = d_s[D-1][0];
      assign ws_out0[2*y+1] = d_s[D-1][1];
      assign ws_out1[2*y] = d_s[D-1][2];
      assign ws_out1[2*y+1] = d_s[D-1][3];
    end
  end
  assign ws_valid = ws && ws_v[Y-1];
  logic unused_valid;
  always_comb begin
    unused_valid = 1'b0;
    for (int x = 0; x < X - 1; x++)
      for (int y = 0; y < Y; y++) unused_valid ^= pe_valid[x][y];
    for (int y = 0; y < Y - 1; y++) unused_valid ^= ws_v[y];
  end

  // In-flight tracking: idle when no valid operand entered in the last DEPTH cycles.
  // last_out: an operand given in cycle T reaches PE (x, y) in cycle T + x + y, whose sum is visible from
  // T + x + y + PE_LATENCY; row 2x + i, read in cycle T + READ_LAT + 1 + 2x + i, is then final in every
  // column (T + READ_LAT + 1 >= T + Y - 1 + PE_LATENCY): the rows become final faster than they are read.
  localparam int READ_LAT = Y + PE_LATENCY - 2;
  logic [DEPTH-1:0] inflight;
  logic [READ_LAT-1:0] lastflight;
  always_ff @(posedge clk) begin
    inflight <= {inflight[DEPTH-2:0], in_valid};
    lastflight <= {lastflight[READ_LAT-2:0], in_valid && in_last};
    if (rst) begin
      inflight <= '0;
      lastflight <= '0;
    end
  end
  assign last_out = lastflight[READ_LAT-1];
  assign idle = inflight == '0 && !in_valid;

  // Read mux: row r = 2x + i comes from PE row x, accumulators i*2 + j.
  always_comb begin
    rd_data = '0;
    for (int x = 0; x < X; x++) begin
      for (int y = 0; y < Y; y++) begin
        if (32'(rd_row) == 2 * x) begin
          rd_data[2*y] = rd_bank ? acc_b1[x][y][0] : acc[x][y][0];
          rd_data[2*y+1] = rd_bank ? acc_b1[x][y][1] : acc[x][y][1];
        end
        if (32'(rd_row) == 2 * x + 1) begin
          rd_data[2*y] = rd_bank ? acc_b1[x][y][2] : acc[x][y][2];
          rd_data[2*y+1] = rd_bank ? acc_b1[x][y][3] : acc[x][y][3];
        end
      end
    end
  end
endmodule
