// Behavioural model of the part of a Xilinx DSP48E2 slice that the PE uses:
// the 27-bit pre-adder (AD = D +/- A), the 27 x 18 signed multiplier and the
// 48-bit accumulator P (P = M or P = P + M).
//
// Pipeline (all registers enabled, as in a full-speed DSP48E2 configuration
// AREG = BREG = DREG = ADREG = MREG = PREG = 1): inputs -> A1/B1/D1 -> AD/B2 -> M -> P,
// so P holds the result of the operands presented 4 clocks earlier. The
// control bits `sub` and `acc` travel with their operands (INMODE/OPMODE
// registered alongside the data), so a control bit applies to the operands
// given in the same cycle. Only A[26:0] enters the pre-adder in the real
// slice; A[29:27] (used only by the A:B ALU path) is not modelled.
module sdac_dsp48e2 (
  input  logic               clk,
  input  logic               ce,     // clock enable of every register
  input  logic signed [26:0] a,      // pre-adder input A (A[26:0] of the slice)
  input  logic signed [26:0] d,      // pre-adder input D
  input  logic signed [17:0] b,      // multiplier input B
  input  logic               sub,    // pre-adder: AD = D - A instead of D + A
  input  logic               acc,    // P = P + M instead of P = M
  output logic signed [47:0] p
);
  logic signed [26:0] a1, d1, ad2;
  logic signed [17:0] b1, b2;
  logic signed [44:0] m3;
  logic sub1, acc1, acc2, acc3;

  always_ff @(posedge clk) begin
    if (ce) begin
      // stage 1: input registers
      a1 <= a;
      d1 <= d;
      b1 <= b;
      sub1 <= sub;
      acc1 <= acc;
      // stage 2: pre-adder, 27-bit two's complement (wraps like the slice)
      ad2 <= sub1 ? d1 - a1 : d1 + a1;
      b2 <= b1;
      acc2 <= acc1;
      // stage 3: 27 x 18 signed multiplier
      m3 <= ad2 * b2;
      acc3 <= acc2;
      // stage 4: 48-bit accumulator, the product sign-extended
      p <= acc3 ? p + 48'(m3) : 48'(m3);
    end
  end
endmodule
