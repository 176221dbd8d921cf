// Instruction decoder: opcode -> queue, and every validity rule of the ISA.
//
// Combinational. Mirrors sdac.isa.encoding.decode_int (the reference) using the
// generated package sdac_isa_pkg: BAD_OPCODE for an opcode that names no
// instruction; BAD_FIELD for a set reserved bit (outside USED_<INSTR>), an enum
// code that names no member, a count below its minimum, or a token mask that
// names the instruction's own queue (halt takes no tokens at all). The four
// bad_* outputs say which BAD_FIELD rules failed (any subset, for diagnosis);
// err is the ISA error code. tests/hw/test_decode.py compares this module with
// the Python decoder on thousands of valid and mutated words; when isa.toml
// gains an instruction or a constrained field, that test fails until the case
// below is added.
module sdac_decode
  import sdac_isa_pkg::*;
(
  input  logic [WORD_BITS-1:0] word,
  output logic                 valid,         // a legal instruction
  output logic [7:0]           err,           // ERR_OK, ERR_BAD_OPCODE or ERR_BAD_FIELD
  output logic                 bad_reserved,  // a reserved bit is set
  output logic                 bad_enum,      // an enum field names no member
  output logic                 bad_min,       // a count field is below its minimum
  output logic                 bad_token,     // a token mask names the own queue (or halt has one)
  output logic [F_OPCODE_W-1:0] opcode,
  output logic                 is_ctl,        // halt: handled by the fetch unit, not by a queue
  output logic [1:0]           queue_id,      // executing queue (Q_LD/Q_CMP/Q_SFU/Q_ST) unless is_ctl
  output logic [3:0]           pop,           // tokens to consume before executing (bit q = queue q)
  output logic [3:0]           push           // tokens to produce after executing
);
`define SDAC_F(INSTR, FIELD) word[F_``INSTR``_``FIELD``_LO +: F_``INSTR``_``FIELD``_W]

  logic known;
  logic [WORD_BITS-1:0] used;

  assign opcode = word[F_OPCODE_LO +: F_OPCODE_W];
  assign pop = word[F_POP_LO +: F_POP_W];
  assign push = word[F_PUSH_LO +: F_PUSH_W];

  always_comb begin
    known = 1'b0;
    used = '1;
    is_ctl = 1'b0;
    queue_id = Q_LD;
    bad_enum = 1'b0;
    bad_min = 1'b0;
    unique case (opcode)
      OP_HALT: begin
        known = 1'b1;
        used = USED_HALT;
        is_ctl = 1'b1;
      end
      OP_SYNC: begin
        known = 1'b1;
        used = USED_SYNC;
        queue_id = `SDAC_F(SYNC, Q);
      end
      OP_SETSTEP: begin
        known = 1'b1;
        used = USED_SETSTEP;
        queue_id = Q_LD;
      end
      OP_LOAD: begin
        known = 1'b1;
        used = USED_LOAD;
        queue_id = Q_LD;
        bad_min = `SDAC_F(LOAD, RUN) == '0 ||
                  `SDAC_F(LOAD, NY) == '0 ||
                  `SDAC_F(LOAD, NZ) == '0;
      end
      OP_STORE: begin
        known = 1'b1;
        used = USED_STORE;
        queue_id = Q_ST;
        bad_min = `SDAC_F(STORE, RUN) == '0 ||
                  `SDAC_F(STORE, NY) == '0 ||
                  `SDAC_F(STORE, NZ) == '0;
      end
      OP_MM: begin
        known = 1'b1;
        used = USED_MM;
        queue_id = Q_CMP;
        bad_enum = `SDAC_F(MM, WSRC) > 2'd2;
        bad_min = `SDAC_F(MM, M) == '0 ||
                  `SDAC_F(MM, N) == '0 ||
                  `SDAC_F(MM, K) == '0;
      end
      OP_CONV: begin
        known = 1'b1;
        used = USED_CONV;
        queue_id = Q_CMP;
        bad_min = `SDAC_F(CONV, IPS) == '0 ||
                  `SDAC_F(CONV, IH) == '0 ||
                  `SDAC_F(CONV, IW) == '0 ||
                  `SDAC_F(CONV, OPS) == '0 ||
                  `SDAC_F(CONV, OH) == '0 ||
                  `SDAC_F(CONV, OW) == '0 ||
                  `SDAC_F(CONV, CIN) == '0 ||
                  `SDAC_F(CONV, COUT) == '0 ||
                  `SDAC_F(CONV, STRIDE) == '0;
      end
      OP_DEQ: begin
        known = 1'b1;
        used = USED_DEQ;
        queue_id = Q_SFU;
        bad_min = `SDAC_F(DEQ, ROWS) == '0 ||
                  `SDAC_F(DEQ, COLS) == '0 ||
                  `SDAC_F(DEQ, GSIZE) == '0;
      end
      OP_ADD: begin
        known = 1'b1;
        used = USED_ADD;
        queue_id = Q_SFU;
        bad_min = `SDAC_F(ADD, ROWS) == '0 ||
                  `SDAC_F(ADD, COLS) == '0 ||
                  `SDAC_F(ADD, GSIZE) == '0;
      end
      OP_ACT: begin
        known = 1'b1;
        used = USED_ACT;
        queue_id = Q_SFU;
        bad_enum = `SDAC_F(ACT, FN) > 2'd2;
        bad_min = `SDAC_F(ACT, ROWS) == '0 ||
                  `SDAC_F(ACT, COLS) == '0 ||
                  `SDAC_F(ACT, GSIZE) == '0;
      end
      OP_DEQACT: begin
        known = 1'b1;
        used = USED_DEQACT;
        queue_id = Q_SFU;
        bad_enum = `SDAC_F(DEQACT, FN) > 2'd2;
        bad_min = `SDAC_F(DEQACT, ROWS) == '0 ||
                  `SDAC_F(DEQACT, COLS) == '0;
      end
      OP_GEGLU: begin
        known = 1'b1;
        used = USED_GEGLU;
        queue_id = Q_SFU;
        bad_min = `SDAC_F(GEGLU, ROWS) == '0 ||
                  `SDAC_F(GEGLU, COLS) == '0;
      end
      OP_NORM: begin
        known = 1'b1;
        used = USED_NORM;
        queue_id = Q_SFU;
        bad_enum = `SDAC_F(NORM, FN) > 2'd2;
        bad_min = `SDAC_F(NORM, ROWS) == '0 ||
                  `SDAC_F(NORM, COLS) == '0 ||
                  `SDAC_F(NORM, GSIZE) == '0;
      end
      OP_SOFTMAX: begin
        known = 1'b1;
        used = USED_SOFTMAX;
        queue_id = Q_SFU;
        bad_min = `SDAC_F(SOFTMAX, ROWS) == '0 ||
                  `SDAC_F(SOFTMAX, COLS) == '0;
      end
      OP_TRANSPOSE: begin
        known = 1'b1;
        used = USED_TRANSPOSE;
        queue_id = Q_SFU;
        bad_min = `SDAC_F(TRANSPOSE, ROWS) == '0 ||
                  `SDAC_F(TRANSPOSE, COLS) == '0;
      end
      default: ;
    endcase
    bad_reserved = known && (word & ~used) != '0;
    if (!known) bad_token = 1'b0;
    else if (is_ctl) bad_token = (pop | push) != 4'd0;
    else bad_token = ((pop | push) & (4'd1 << queue_id)) != 4'd0;
    if (!known) err = ERR_BAD_OPCODE;
    else if (bad_reserved || bad_enum || bad_min || bad_token) err = ERR_BAD_FIELD;
    else err = ERR_OK;
    valid = err == ERR_OK;
  end
`undef SDAC_F
endmodule
