// AXI-Lite control/status registers (32-bit, one outstanding transaction per channel).
//
//  addr  name        access  meaning
//  0x00  CTRL        W       bit 0: START (pulse; ignored while busy)
//  0x04  STATUS      R       bit 0: DONE, bit 1: BUSY, bit 2: ERROR, bit 3: UNSUPPORTED (an
//                            instruction kind this RTL does not implement yet was skipped)
//  0x08  ERROR       R       ISA error code (isa.toml [errors]), 0 = OK
//  0x0C  ERR_INDEX   R       instruction index the error names
//  0x10  INSTR_BASE  RW      DRAM byte address of instruction 0
//  0x14  INSTR_COUNT RW      program length in instructions (fetch past it: FETCH_OOB)
//  0x18  STEP        RW      CSR STEP read by `setstep src=csr`
//  0x1C  DRAM_SIZE   RW      bytes of device DRAM that DMA may touch (else OOB_DRAM)
//  0x20  EXECUTED    R       instructions executed (halt included)
//  0x24  CYCLES_LO   R       cycles from START to DONE (low 32 bits)
//  0x28  CYCLES_HI   R       (high 32 bits)
//  0x2C  ID          R       ISA_VERSION | L << 8 | X << 16 | Y << 24
module sdac_csr #(
  parameter logic [31:0] ID = 32'h0
) (
  input  logic        clk,
  input  logic        rst,
  // AXI-Lite slave
  input  logic        s_awvalid,
  output logic        s_awready,
  input  logic [7:0]  s_awaddr,
  input  logic        s_wvalid,
  output logic        s_wready,
  input  logic [31:0] s_wdata,
  output logic        s_bvalid,
  input  logic        s_bready,
  output logic [1:0]  s_bresp,
  input  logic        s_arvalid,
  output logic        s_arready,
  input  logic [7:0]  s_araddr,
  output logic        s_rvalid,
  input  logic        s_rready,
  output logic [31:0] s_rdata,
  output logic [1:0]  s_rresp,
  // to / from the machine
  output logic        start,
  output logic [31:0] instr_base,
  output logic [31:0] instr_count,
  output logic [31:0] step,
  output logic [31:0] dram_size,
  input  logic        done,
  input  logic        busy,
  input  logic        unsupported,
  input  logic [7:0]  err,
  input  logic [31:0] err_index,
  input  logic [31:0] executed,
  input  logic [63:0] cycles
);
  logic aw_held, w_held;
  logic [7:0] aw_addr;
  logic [31:0] w_data;

  assign s_awready = !aw_held && !s_bvalid;
  assign s_wready = !w_held && !s_bvalid;
  assign s_bresp = 2'b00;
  assign s_rresp = 2'b00;
  assign s_arready = !s_rvalid;

  always_ff @(posedge clk) begin
    start <= 1'b0;
    if (s_awvalid && s_awready) begin
      aw_held <= 1'b1;
      aw_addr <= s_awaddr;
    end
    if (s_wvalid && s_wready) begin
      w_held <= 1'b1;
      w_data <= s_wdata;
    end
    if (aw_held && w_held) begin
      aw_held <= 1'b0;
      w_held <= 1'b0;
      s_bvalid <= 1'b1;
      unique case (aw_addr)
        8'h00: start <= w_data[0] && !busy;
        8'h10: instr_base <= w_data;
        8'h14: instr_count <= w_data;
        8'h18: step <= w_data;
        8'h1C: dram_size <= w_data;
        default: ;
      endcase
    end
    if (s_bvalid && s_bready) s_bvalid <= 1'b0;

    if (s_arvalid && s_arready) begin
      s_rvalid <= 1'b1;
      unique case (s_araddr)
        8'h04: s_rdata <= {28'd0, unsupported, err != 8'd0, busy, done};
        8'h08: s_rdata <= {24'd0, err};
        8'h0C: s_rdata <= err_index;
        8'h10: s_rdata <= instr_base;
        8'h14: s_rdata <= instr_count;
        8'h18: s_rdata <= step;
        8'h1C: s_rdata <= dram_size;
        8'h20: s_rdata <= executed;
        8'h24: s_rdata <= cycles[31:0];
        8'h28: s_rdata <= cycles[63:32];
        8'h2C: s_rdata <= ID;
        default: s_rdata <= 32'd0;
      endcase
    end else if (s_rvalid && s_rready) begin
      s_rvalid <= 1'b0;
    end

    if (rst) begin
      aw_held <= 1'b0;
      w_held <= 1'b0;
      s_bvalid <= 1'b0;
      s_rvalid <= 1'b0;
      start <= 1'b0;
      instr_base <= '0;
      instr_count <= '0;
      step <= '0;
      dram_size <= '0;
    end
  end
endmodule
