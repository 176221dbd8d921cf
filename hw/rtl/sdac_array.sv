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
module sdac_array #(
  parameter int X = 20,
  parameter int Y = 10,
  parameter int ACC_W = 32
) (
  input  logic                         clk,
  input  logic                         rst,
  input  logic                         in_valid,
  input  logic                         in_clr,
  input  logic signed [2*X-1:0][7:0]   a_col,
  input  logic signed [2*Y-1:0][4:0]   w_row,
  input  logic [$clog2(2*X)-1:0]       rd_row,
  output logic signed [2*Y-1:0][ACC_W-1:0] rd_data,
  output logic                         idle
);
  localparam int PE_LATENCY = 6;               // sdac_pe: operands -> accumulators
  localparam int DEPTH = X + Y + PE_LATENCY;   // last operand in -> last accumulator written

  // Horizontal (activation + control) and vertical (weight) links. h*[x][y] feeds PE (x, y);
  // column Y is the unused output of the last PE of a row, row X that of a column.
  logic signed [7:0] h_a0 [X][Y+1];
  logic signed [7:0] h_a1 [X][Y+1];
  logic              h_en [X][Y+1];
  logic              h_clr [X][Y+1];
  logic signed [4:0] v_w0 [X+1][Y];
  logic signed [4:0] v_w1 [X+1][Y];
  logic signed [ACC_W-1:0] acc [X][Y][4];

  // Left edge: row pair x delayed by x cycles.
  for (genvar x = 0; x < X; x++) begin : g_row_skew
    if (x == 0) begin : g_direct
      assign h_a0[x][0] = a_col[0];
      assign h_a1[x][0] = a_col[1];
      assign h_en[x][0] = in_valid;
      assign h_clr[x][0] = in_clr;
    end else begin : g_delay
      logic signed [7:0] d_a0 [x];
      logic signed [7:0] d_a1 [x];
      logic d_en [x];
      logic d_clr [x];
      always_ff @(posedge clk) begin
        d_a0[0] <= a_col[2*x];
        d_a1[0] <= a_col[2*x+1];
        d_en[0] <= in_valid;
        d_clr[0] <= in_clr;
        for (int s = 1; s < x; s++) begin
          d_a0[s] <= d_a0[s-1];
          d_a1[s] <= d_a1[s-1];
          d_en[s] <= d_en[s-1];
          d_clr[s] <= d_clr[s-1];
        end
        if (rst) for (int s = 0; s < x; s++) d_en[s] <= 1'b0;
      end
      assign h_a0[x][0] = d_a0[x-1];
      assign h_a1[x][0] = d_a1[x-1];
      assign h_en[x][0] = d_en[x-1];
      assign h_clr[x][0] = d_clr[x-1];
    end
  end

  // Top edge: column pair y delayed by y cycles.
  for (genvar y = 0; y < Y; y++) begin : g_col_skew
    if (y == 0) begin : g_direct
      assign v_w0[0][y] = w_row[0];
      assign v_w1[0][y] = w_row[1];
    end else begin : g_delay
      logic signed [4:0] d_w0 [y];
      logic signed [4:0] d_w1 [y];
      always_ff @(posedge clk) begin
        d_w0[0] <= w_row[2*y];
        d_w1[0] <= w_row[2*y+1];
        for (int s = 1; s < y; s++) begin
          d_w0[s] <= d_w0[s-1];
          d_w1[s] <= d_w1[s-1];
        end
      end
      assign v_w0[0][y] = d_w0[y-1];
      assign v_w1[0][y] = d_w1[y-1];
    end
  end

  logic unused_pe_valid [X][Y];
  for (genvar x = 0; x < X; x++) begin : g_x
    for (genvar y = 0; y < Y; y++) begin : g_y
      sdac_pe #(.ACC_W(ACC_W)) u_pe (
        .clk, .rst,
        .en(h_en[x][y]), .clr(h_clr[x][y]),
        .a0(h_a0[x][y]), .a1(h_a1[x][y]), .w0(v_w0[x][y]), .w1(v_w1[x][y]),
        .a0_out(h_a0[x][y+1]), .a1_out(h_a1[x][y+1]),
        .w0_out(v_w0[x+1][y]), .w1_out(v_w1[x+1][y]),
        .en_out(h_en[x][y+1]), .clr_out(h_clr[x][y+1]),
        .acc_valid(unused_pe_valid[x][y]),
        .acc00(acc[x][y][0]), .acc01(acc[x][y][1]), .acc10(acc[x][y][2]), .acc11(acc[x][y][3])
      );
    end
  end
  // Outputs of the last PE in each row / column go nowhere.
  logic unused_edges;
  always_comb begin
    unused_edges = 1'b0;
    for (int x = 0; x < X; x++)
      unused_edges ^= ^{h_a0[x][Y], h_a1[x][Y], h_en[x][Y], h_clr[x][Y]};
    for (int y = 0; y < Y; y++)
      unused_edges ^= ^{v_w0[X][y], v_w1[X][y]};
  end

  // In-flight tracking: idle when no valid operand entered in the last DEPTH cycles.
  logic [DEPTH-1:0] inflight;
  always_ff @(posedge clk) begin
    inflight <= {inflight[DEPTH-2:0], in_valid};
    if (rst) inflight <= '0;
  end
  assign idle = inflight == '0 && !in_valid;

  // Read mux: row r = 2x + i comes from PE row x, accumulators i*2 + j.
  always_comb begin
    rd_data = '0;
    for (int x = 0; x < X; x++) begin
      for (int y = 0; y < Y; y++) begin
        if (32'(rd_row) == 2 * x) begin
          rd_data[2*y] = acc[x][y][0];
          rd_data[2*y+1] = acc[x][y][1];
        end
        if (32'(rd_row) == 2 * x + 1) begin
          rd_data[2*y] = acc[x][y][2];
          rd_data[2*y+1] = acc[x][y][3];
        end
      end
    end
  end
endmodule
