# hello.s: y = requantize(x @ W) for x of 80 x 20 int8 and W of 20 x 20 int4,
# in two tiles of 40 rows, with dependency tokens between the four queues.
#
#   sdac asm examples/asm/hello.s -o hello.bin
#   sdac disasm hello.bin
#
# DRAM map (L = 20 lanes):
#   0x0000  W      20 wgt lines of 10 bytes (int4, two per byte), row j = reduction index
#   0x0400  step table: one 80-byte bank per denoising step; word 0 = requantization scale entry
#   0x1000  x      80 rows x 20 int8 (one act line per row)
#   0x2000  y      80 rows x 20 int8
# On chip: act lines 0x000/0x040 hold the x tiles, acc lines 0x000/0x040 the products,
# act lines 0x100/0x140 the results; prm line 0 the scale entry.

setstep src=csr, bank=0x50                              # bank of the step in CSR STEP, 80 bytes each
load buf=wgt, dram=0x0000, sram=0x000, run=20           # W
load buf=prm, step=1, dram=0x0400, sram=0x000, run=1    # this step's scale entry (step-relative)
load buf=act, dram=0x1000, sram=0x000, run=40, push=cmp # x rows 0..39
load buf=act, dram=0x1320, sram=0x040, run=40, push=cmp # x rows 40..79 (0x1000 + 40*20)

# C = A x W on the array (output stationary), one token from ld each
mm a=0x000, ars=1, wsrc=wgt, w=0x000, ws=20, c=0x000, crs=1, m=40, n=20, k=20, pop=ld, push=sfu
mm a=0x040, ars=1, wsrc=wgt, w=0x000, ws=20, c=0x040, crs=1, m=40, n=20, k=20, pop=ld, push=sfu

# int32 -> int8 with the step's scale entry (prm word 0), no activation function
act sbuf=acc, s=0x000, srs=1, out=act, d=0x100, drs=1, rows=40, cols=20, fn=none, sc=0, pop=cmp, push=st
act sbuf=acc, s=0x040, srs=1, out=act, d=0x140, drs=1, rows=40, cols=20, fn=none, sc=0, pop=cmp, push=st

store buf=act, dram=0x2000, sram=0x100, run=40, pop=sfu
store buf=act, dram=0x2320, sram=0x140, run=40, pop=sfu
halt
