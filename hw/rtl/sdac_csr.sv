// AXI-Lite control/status registers (32-bit, one outstanding transaction per channel).
//
// The register map (offsets, access, STATUS/CTRL bits, the ID layout) is defined once in
// isa/isa.toml [csr] and reaches this file as the generated CSR_* constants of sdac_isa_pkg;
// docs/isa.md "Control and status registers" is the reference. No literal offsets or bit
// positions here (tests/runtime/test_device_rtl.py checks). In short: CTRL.START starts the
// program (ignored while busy); STATUS = DONE | BUSY | ERROR | UNSUPPORTED; ERROR / ERR_INDEX
// name the first error; INSTR_BASE, INSTR_COUNT, STEP, DRAM_SIZE are RW; EXECUTED and
// CYCLES_LO/HI count the last run; ID is the parameter (built by csr_id_value()).
module sdac_csr
  import sdac_isa_pkg::*;
#(
  parameter logic [31:0] ID = 32'h0
) (
  input  logic        clk,
  input  logic        rst,
  // AXI-Lite slave
  input  logic        s_awvalid,
  output logic        s_awready,
  input  logic [CSR_ADDR_BITS-1:0] s_awaddr,
  input  logic        s_wvalid,
  output logic        s_wready,
  input  logic [31:0] s_wdata,
  output logic        s_bvalid,
  input  logic        s_bready,
  output logic [1:0]  s_bresp,
  input  logic        s_arvalid,
  output logic        s_arready,
  input  logic [CSR_ADDR_BITS-1:0] s_araddr,
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
  logic [CSR_ADDR_BITS-1:0] aw_addr;
  logic [31:0] w_data;
  logic [31:0] status_word;

  always_comb begin
    status_word = '0;
    status_word[CSR_STATUS_DONE_BIT] = done;
    status_word[CSR_STATUS_BUSY_BIT] = busy;
    status_word[CSR_STATUS_ERROR_BIT] = err != 8'd0;
    status_word[CSR_STATUS_UNSUPPORTED_BIT] = unsupported;
  end

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
        CSR_CTRL: start <= w_data[CSR_CTRL_START_BIT] && !busy;
        CSR_INSTR_BASE: instr_base <= w_data;
        CSR_INSTR_COUNT: instr_count <= w_data;
        CSR_STEP: step <= w_data;
        CSR_DRAM_SIZE: dram_size <= w_data;
        default: ;
      endcase
    end
    if (s_bvalid && s_bready) s_bvalid <= 1'b0;

    if (s_arvalid && s_arready) begin
      s_rvalid <= 1'b1;
      unique case (s_araddr)
        CSR_STATUS: s_rdata <= status_word;
        CSR_ERROR: s_rdata <= {24'd0, err};
        CSR_ERR_INDEX: s_rdata <= err_index;
        CSR_INSTR_BASE: s_rdata <= instr_base;
        CSR_INSTR_COUNT: s_rdata <= instr_count;
        CSR_STEP: s_rdata <= step;
        CSR_DRAM_SIZE: s_rdata <= dram_size;
        CSR_EXECUTED: s_rdata <= executed;
        CSR_CYCLES_LO: s_rdata <= cycles[31:0];
        CSR_CYCLES_HI: s_rdata <= cycles[63:32];
        CSR_ID: s_rdata <= ID;
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
