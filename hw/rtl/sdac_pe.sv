// Processing element: a 2 x 2 outer product of two int8 activations and two
// weights per cycle (4 MACs) on two DSP48E2 slices, exact for every input.
// Weights are 5-bit signed (-16..15): int4 weights (-8..7) and, for int8 x int8
// products computed in two nibble passes, the unsigned low nibble (0..15).
//
//   a_i = 16 * h_i + l_i      l_i = a_i[3:0] unsigned (0..15), h_i = a_i[7:4] signed (-8..7)
//   DSP L: (l0 + l1 * 2^22) * (w0 + w1 * 2^11)    DSP H: the same with h0, h1
//   P = sum_{i,j} n_i * w_j * 2^(11 * (2i + j))   four 11-bit fields at bits 0, 11, 22, 33
//   field f = signed11(P[11f +: 11] + P[11f - 1])  (the bit below a field is the borrow
//                                                 taken by the negative fields beneath it)
//   a_i * w_j = L_f + 16 * H_f,  f = 2i + j
//
// Every nibble product lies in [-240, 225] (int4 weights: [-120, 105]), inside
// the 11-bit field range, so the unpack is exact (proof in hw/packing.py and
// docs/hardware.md; checked exhaustively by tests/hw/test_pe.py: all 2^24
// (a0, a1, w0, w1) with int4 weights, and every input of each DSP with 5-bit ones).
//
// Timing: operands presented with `en` in cycle t reach the accumulators at the
// clock edge ending cycle t + LATENCY - 1; `clr` starts a new sum (acc = product)
// instead of adding. `acc_valid` is high in the cycle after an accumulator
// update. The operands are also forwarded one cycle later on a_out / w_out /
// en_out / clr_out for the systolic array (activations and their control travel
// along a row, weights down a column).
//
// Weight-stationary mode (ws = 1, CONV-WS in sdac_array): the weights are not
// taken from w0/w1 but from two registers held in the PE. `wcap` captures
// w0/w1 into the shadow pair (the next block loads while this one streams);
// an operand with `clr` swaps the shadow pair in (that operand already uses
// it). The four accumulators then hold partial sums that flow down a column:
// acc = ps_in + a_i * w_j, with ps_in the accumulators of the PE above (0 at
// the top row), so the bottom row emits sum over the X input channels of the
// column. Same DSP packing and latency as output-stationary mode.
//
// Output stationary, two accumulator sets: `bank` (travelling with its
// operand like clr) selects the set an operand adds into, so one tile can be
// read out of one set (acc00.. = set 0, acc00_b1.. = set 1) while the next
// tile accumulates in the other. Weight-stationary mode uses set 0.
module sdac_pe #(
  parameter int ACC_W = 32,
  // Bits per product field. Exact for 9..11 with 5-bit weights (8..11 for int4)
  // (ports: B needs 5 + FIELD <= 18, AD 5 + 2 FIELD <= 27); a parameter only so
  // that the tests can show that 7 fails.
  parameter int FIELD = 11
) (
  input  logic                    clk,
  input  logic                    rst,
  input  logic                    en,
  input  logic                    clr,
  input  logic signed [7:0]       a0,
  input  logic signed [7:0]       a1,
  input  logic signed [4:0]       w0,
  input  logic signed [4:0]       w1,
  input  logic                    bank,      // output stationary: accumulator set of this operand
  input  logic                    ws,        // weight-stationary mode (static while operands are in flight)
  input  logic                    wcap,      // ws: capture w0 / w1 into the shadow weights
  input  logic signed [ACC_W-1:0] ps00,      // ws: partial sums from the PE above
  input  logic signed [ACC_W-1:0] ps01,
  input  logic signed [ACC_W-1:0] ps10,
  input  logic signed [ACC_W-1:0] ps11,
  output logic signed [7:0]       a0_out,
  output logic signed [7:0]       a1_out,
  output logic signed [4:0]       w0_out,
  output logic signed [4:0]       w1_out,
  output logic                    en_out,    // en / clr forwarded along the row with the activations
  output logic                    clr_out,
  output logic                    bank_out,
  output logic                    acc_valid,
  output logic signed [ACC_W-1:0] acc00,   // sum of a0 * w0
  output logic signed [ACC_W-1:0] acc01,   // sum of a0 * w1
  output logic signed [ACC_W-1:0] acc10,   // sum of a1 * w0
  output logic signed [ACC_W-1:0] acc11,   // sum of a1 * w1
  output logic signed [ACC_W-1:0] acc00_b1,   // accumulator set 1
  output logic signed [ACC_W-1:0] acc01_b1,
  output logic signed [ACC_W-1:0] acc10_b1,
  output logic signed [ACC_W-1:0] acc11_b1
);
  localparam int DSP_LATENCY = 4;
  localparam int LATENCY = DSP_LATENCY + 2;   // + product register + accumulator

  // Operand packing (fabric): nibble-split activations on the pre-adder, the
  // two weights as one 18-bit signed B operand.
  logic signed [26:0] ad_lo_a, ad_lo_d, ad_hi_a, ad_hi_d;
  logic signed [17:0] b_packed;
  assign ad_lo_d = 27'(unsigned'(a0[3:0]));
  assign ad_lo_a = 27'(unsigned'(a1[3:0])) <<< (2 * FIELD);
  // A part-select is unsigned in SystemVerilog: signed'() makes the high nibble
  // sign-extend (without it -8..-1 would become 8..15).
  assign ad_hi_d = 27'(signed'(a0[7:4]));
  assign ad_hi_a = 27'(signed'(a1[7:4])) <<< (2 * FIELD);
  // Weights: from the ports (output stationary) or held (weight stationary; clr takes the shadow pair).
  logic signed [4:0] wsh0, wsh1, wact0, wact1, wb0, wb1;
  assign wb0 = !ws ? w0 : clr ? wsh0 : wact0;
  assign wb1 = !ws ? w1 : clr ? wsh1 : wact1;
  always_ff @(posedge clk) begin
    if (ws && wcap) begin
      wsh0 <= w0;
      wsh1 <= w1;
    end
    if (ws && en && clr) begin
      wact0 <= wsh0;
      wact1 <= wsh1;
    end
  end
  assign b_packed = 18'(wb0) + (18'(wb1) <<< FIELD);

  logic signed [47:0] p_lo, p_hi;
  sdac_dsp48e2 u_dsp_lo (.clk, .ce(1'b1), .a(ad_lo_a), .d(ad_lo_d), .b(b_packed),
                         .sub(1'b0), .acc(1'b0), .p(p_lo));
  sdac_dsp48e2 u_dsp_hi (.clk, .ce(1'b1), .a(ad_hi_a), .d(ad_hi_d), .b(b_packed),
                         .sub(1'b0), .acc(1'b0), .p(p_hi));

  // Sign-correcting unpack of the four fields of each product.
  logic signed [FIELD-1:0] f_lo [4];
  logic signed [FIELD-1:0] f_hi [4];
  assign f_lo[0] = p_lo[FIELD-1:0];
  assign f_hi[0] = p_hi[FIELD-1:0];
  for (genvar f = 1; f < 4; f++) begin : g_unpack
    assign f_lo[f] = p_lo[FIELD*f +: FIELD] + FIELD'(p_lo[FIELD*f-1]);
    assign f_hi[f] = p_hi[FIELD*f +: FIELD] + FIELD'(p_hi[FIELD*f-1]);
  end
  // P[47:44] only repeat the sign of the top field.
  logic unused_p_top;
  assign unused_p_top = ^{p_lo[47:4*FIELD], p_hi[47:4*FIELD]};

  // a_i * w_j = L + 16 H, in [-2048, 2032]: 13 bits.
  logic signed [12:0] prod [4];
  logic en_d [LATENCY-1];
  logic clr_d [LATENCY-1];
  logic bank_d [LATENCY-1];

  always_ff @(posedge clk) begin
    for (int f = 0; f < 4; f++) begin
      prod[f] <= 13'(f_lo[f]) + (13'(f_hi[f]) <<< 4);
    end
    en_d[0] <= en;
    clr_d[0] <= clr;
    bank_d[0] <= bank;
    for (int s = 1; s < LATENCY - 1; s++) begin
      en_d[s] <= en_d[s-1];
      clr_d[s] <= clr_d[s-1];
      bank_d[s] <= bank_d[s-1];
    end
    if (en_d[LATENCY-2] && ws) begin
      acc00 <= ps00 + ACC_W'(prod[0]);
      acc01 <= ps01 + ACC_W'(prod[1]);
      acc10 <= ps10 + ACC_W'(prod[2]);
      acc11 <= ps11 + ACC_W'(prod[3]);
    end else if (en_d[LATENCY-2] && bank_d[LATENCY-2]) begin
      acc00_b1 <= (clr_d[LATENCY-2] ? '0 : acc00_b1) + ACC_W'(prod[0]);
      acc01_b1 <= (clr_d[LATENCY-2] ? '0 : acc01_b1) + ACC_W'(prod[1]);
      acc10_b1 <= (clr_d[LATENCY-2] ? '0 : acc10_b1) + ACC_W'(prod[2]);
      acc11_b1 <= (clr_d[LATENCY-2] ? '0 : acc11_b1) + ACC_W'(prod[3]);
    end else if (en_d[LATENCY-2]) begin
      acc00 <= (clr_d[LATENCY-2] ? '0 : acc00) + ACC_W'(prod[0]);
      acc01 <= (clr_d[LATENCY-2] ? '0 : acc01) + ACC_W'(prod[1]);
      acc10 <= (clr_d[LATENCY-2] ? '0 : acc10) + ACC_W'(prod[2]);
      acc11 <= (clr_d[LATENCY-2] ? '0 : acc11) + ACC_W'(prod[3]);
    end
    acc_valid <= en_d[LATENCY-2];
    a0_out <= a0;
    a1_out <= a1;
    w0_out <= w0;
    w1_out <= w1;
    en_out <= en;
    clr_out <= clr;
    bank_out <= bank;
    if (rst) begin
      for (int s = 0; s < LATENCY - 1; s++) en_d[s] <= 1'b0;
      acc_valid <= 1'b0;
      en_out <= 1'b0;
    end
  end
endmodule
