//! The assembler of [`Tile`]s, with iced-x86's code assembler.
//!
//! Registers (System V: arguments in `rdi`, `rsi`, `rdx`, `rcx`; `rax`,
//! `r8`–`r11` free to use; no vector register kept for the caller):
//!
//! | register | holds |
//! |---|---|
//! | `rdi`, `rsi` | the input and the weights of the current channel |
//! | `rdx` | the bias (read once) |
//! | `rcx` | the accumulator block (written once, at the end) |
//! | `rax` | the channel loop's count |
//! | `r8`, `r9`, `r10` | the kernel-row loop's input, weights and count |
//! | vector 0 … A−1 | the accumulators, `(v, q)` at `v · positions + q` |
//! | vector A … A+V−1 | the tap's weight vectors, loaded once per tap |
//! | vector A+V | AVX2 only: the broadcast input pixel |
//!
//! On AVX-512 each FMA broadcasts its input pixel from memory
//! (`vfmadd231ps zmm, zmm, dword bcst [...]`), the shape that measured
//! fastest (about 34 MACs per TSC tick with 14 accumulators on the
//! machines convjit is measured on); AVX2 has no embedded broadcast, so
//! each pixel is broadcast once into a register and multiplied by each
//! weight vector.

use iced_x86::IcedError;
use iced_x86::code_asm::*;

use super::{MAX_REACH, Tile};
use crate::error::{Error, Result};
use crate::target::Isa;

const YMM: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];
const ZMM: [AsmRegisterZmm; 16] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15,
];

/// The machine code of `tile`, and the instructions it was assembled from
/// (for the audit).
pub fn assemble(tile: &Tile) -> Result<(Vec<u8>, Vec<iced_x86::Instruction>)> {
    let fail = |e: IcedError| Error::Jit(format!("assembling a {} tile: {e}", tile.isa));
    let registers = tile.accumulators()
        + tile.vectors
        + match tile.isa {
            Isa::Avx2 => 1,
            _ => 0,
        };
    if !tile.isa.is_assembled() || registers > 16 || tile.accumulators() == 0 {
        return Err(Error::Jit(format!(
            "no {} tile of {} accumulators × {} weight vectors",
            tile.isa,
            tile.accumulators(),
            tile.vectors
        )));
    }
    if !tile.within_reach() {
        return Err(Error::Jit(format!(
            "a {} tile's offsets reach past {MAX_REACH} bytes",
            tile.isa
        )));
    }
    let mut a = CodeAssembler::new(64).map_err(fail)?;
    let mut e = Emit { a: &mut a, tile };
    e.function().map_err(fail)?;
    let instructions = a.instructions().to_vec();
    let bytes = a.assemble(0).map_err(fail)?;
    Ok((bytes, instructions))
}

/// An assembler and the tile it writes.
struct Emit<'a> {
    a: &'a mut CodeAssembler,
    tile: &'a Tile,
}

/// A displacement: [`assemble`] first checks that every one the tile
/// forms is within [`MAX_REACH`].
fn disp(off: i64) -> std::result::Result<i32, IcedError> {
    debug_assert!(off.abs() <= MAX_REACH);
    Ok(off as i32)
}

type R = std::result::Result<(), IcedError>;

impl Emit<'_> {
    fn accs(&self) -> usize {
        self.tile.accumulators()
    }

    fn positions(&self) -> usize {
        self.tile.positions.len()
    }

    /// Vector register `i` as a full vector of the tile's ISA: a move to
    /// or from memory.
    fn mov_load(&mut self, reg: usize, base: AsmRegister64, off: i64) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vmovups(ZMM[reg], zmmword_ptr(base + disp(off)?)),
            _ => self.a.vmovups(YMM[reg], ymmword_ptr(base + disp(off)?)),
        }
    }

    fn mov_store(&mut self, base: AsmRegister64, off: i64, reg: usize) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vmovups(zmmword_ptr(base + disp(off)?), ZMM[reg]),
            _ => self.a.vmovups(ymmword_ptr(base + disp(off)?), YMM[reg]),
        }
    }

    /// The whole function: the accumulators from the bias, the channel
    /// loop, the channels it leaves, the stores.
    fn function(&mut self) -> R {
        let vb = self.tile.isa.bytes() as i64;
        let p = self.positions();
        for v in 0..self.tile.vectors {
            for q in 0..p {
                self.mov_load(v * p + q, rdx, v as i64 * vb)?;
            }
        }
        let has_taps = !self.tile.taps.taps.is_empty() && self.tile.taps.rows > 0;
        if has_taps {
            let unroll = self.tile.unroll.clamp(1, self.tile.channels.max(1));
            let (full, rest) = (self.tile.channels / unroll, self.tile.channels % unroll);
            if full > 0 {
                let mut top = self.a.create_label();
                self.a.mov(rax, full as u64)?;
                self.a.set_label(&mut top)?;
                self.channels(unroll)?;
                self.advance(rdi, unroll as i64 * self.tile.plane)?;
                self.advance(rsi, unroll as i64 * self.tile.w_channel)?;
                self.a.sub(rax, 1)?;
                self.a.jne(top)?;
            }
            self.channels(rest)?;
        }
        for a in 0..self.accs() {
            self.mov_store(rcx, a as i64 * vb, a)?;
        }
        self.a.vzeroupper()?;
        self.a.ret()
    }

    /// `reg += bytes`.
    fn advance(&mut self, reg: AsmRegister64, bytes: i64) -> R {
        if bytes != 0 {
            self.a.add(reg, disp(bytes)?)?;
        }
        Ok(())
    }

    /// The taps of `count` consecutive channels from `rdi`, `rsi`.
    fn channels(&mut self, count: usize) -> R {
        let (plane, wch) = (self.tile.plane, self.tile.w_channel);
        for u in 0..count as i64 {
            if self.tile.taps.rows == 1 {
                self.taps(rdi, rsi, u * plane, u * wch)?;
                continue;
            }
            // A loop over the kernel's rows, the pointers advanced.
            let (w_step, x_step) = self.tile.taps.row_step;
            self.a.lea(r8, qword_ptr(rdi + disp(u * plane)?))?;
            self.a.lea(r9, qword_ptr(rsi + disp(u * wch)?))?;
            self.a.mov(r10, self.tile.taps.rows as u64)?;
            let mut row = self.a.create_label();
            self.a.set_label(&mut row)?;
            self.taps(r8, r9, 0, 0)?;
            self.advance(r8, x_step)?;
            self.advance(r9, w_step)?;
            self.a.sub(r10, 1)?;
            self.a.jne(row)?;
        }
        Ok(())
    }

    /// One row iteration's taps, the input at `x + x_off`, the weights at
    /// `w + w_off`: per tap, the weight vectors loaded, then each
    /// position's pixel multiplied into its accumulators.
    fn taps(&mut self, x: AsmRegister64, w: AsmRegister64, x_off: i64, w_off: i64) -> R {
        let (accs, vectors, p) = (self.accs(), self.tile.vectors, self.positions());
        let vb = self.tile.isa.bytes() as i64;
        let taps = self.tile.taps.taps.clone();
        for (tw, tx) in taps {
            for v in 0..vectors {
                self.mov_load(accs + v, w, w_off + tw + v as i64 * vb)?;
            }
            for q in 0..p {
                let at = disp(x_off + tx + self.tile.positions[q])?;
                match self.tile.isa {
                    Isa::Avx512 => {
                        for v in 0..vectors {
                            let (acc, weight) = (ZMM[v * p + q], ZMM[accs + v]);
                            self.a.vfmadd231ps(acc, weight, dword_bcst(x + at))?;
                        }
                    }
                    _ => {
                        let pixel = YMM[accs + vectors];
                        self.a.vbroadcastss(pixel, dword_ptr(x + at))?;
                        for v in 0..vectors {
                            self.a.vfmadd231ps(YMM[v * p + q], YMM[accs + v], pixel)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
