//! The assembler of [`Tile`]s, with iced-x86's code assembler.
//!
//! Registers (System V: arguments in `rdi`, `rsi`, `rdx`, `rcx`; `rax`,
//! `r8`–`r11` free to use; no vector register kept for the caller):
//!
//! | register | holds |
//! |---|---|
//! | `rdi`, `rsi` | the input and the weights of the current channel |
//! | `rdx` | the bias (read once), then the kernel-row loop's count |
//! | `rcx` | the accumulator block (written once, at the end) |
//! | `r8`, `r9` | the output and the channels to store (with [`Stores`]); `r9` builds a tile's load masks, the channels kept in `xmm31` meanwhile |
//! | `rax` | the channel loop's count; the epilogue's constants |
//! | `r10`, `r11` | the kernel-row loop's input and weights |
//! | vector 0 … A−1 | the accumulators, `(v, q)` at `v · positions + q` |
//! | vector A … A+V−1 | the tap's weight vectors, loaded once per tap; a pixels tile's channels' weights broadcast, for a chunk of taps at a time when it holds them (`zmm17`–`zmm30` too on AVX-512, `zmm19`–`zmm30` in a deinterleaving tile) |
//! | vector A+V | AVX2 only: the broadcast input pixel (not in a depthwise tile, whose FMAs read a vector of pixels) |
//! | `zmm16`–`zmm31`, `k1`, `k2` | the epilogue's transpose and masks (AVX-512) |
//! | `zmm16`, `k3` | a pixels tile's input vector shared by several taps (`ymm15` on AVX2), or loaded under a mask, zeros in the lanes it skips (AVX-512) |
//! | `zmm16`–`zmm18`, `k3`–`k5` | a deinterleaved load (AVX-512): the two vectors loaded (the first is the result, or a pair's odd one), a pair's even result (`zmm18`), the masks (`k4` every even element); `zmm16` the epilogue's permute back into pixel order |
//!
//! The epilogue of a tile with [`Stores`] (AVX-512): the accumulators go
//! to the `acc` block, then for each vector of channels its 16 (or fewer)
//! positions are loaded back, activated, and transposed in registers
//! (unpack by floats, by pairs, then two shuffles of 128-bit blocks: 64
//! shuffles for 16 × 16), so that register `c` holds channel `c`'s
//! positions; each row of the tile is then one store per channel, masked
//! to the row's pixels (a masked-off lane is neither written nor read, so
//! the store's base may lie before the row). A transposed phase's pixels
//! lie `stride` apart: runs of `⌈16 / stride⌉` of them are rotated to lane
//! 0 (`valignd`), spread to every `stride`-th lane (`vexpandps`) and
//! stored under that mask. A tile of merged column phases
//! ([`super::Tile::members`]) loads accumulator `(v, q)` — phase `v`,
//! position `q` — as the transpose's row `q · members + v`, so that each
//! channel's register holds every phase's pixels in output order: one
//! masked store per channel.
//!
//! On AVX-512 each FMA broadcasts its input pixel from memory
//! (`vfmadd231ps zmm, zmm, dword bcst [...]`), the shape that measured
//! fastest (about 34 MACs per TSC tick with 14 accumulators on the
//! machines convjit is measured on); AVX2 has no embedded broadcast, so
//! each pixel is broadcast once into a register and multiplied by each
//! weight vector.

use std::collections::HashMap;

use iced_x86::IcedError;
use iced_x86::code_asm::*;

use super::{Activation, Form, MAX_REACH, PixelStores, Stores, Tile};
use crate::error::{Error, Result};
use crate::target::Isa;

const XMM: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15,
];
const YMM: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];
const ZMM: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
    zmm28, zmm29, zmm30, zmm31,
];

/// The machine code of `tile`, and the instructions it was assembled from
/// (for the audit).
pub fn assemble(tile: &Tile) -> Result<(Vec<u8>, Vec<iced_x86::Instruction>)> {
    let fail = |e: IcedError| Error::Jit(format!("assembling a {} tile: {e}", tile.isa));
    let registers = tile.accumulators() + reused(tile) + usize::from(scratch(tile));
    let stores_ok = tile.stores.as_ref().is_none_or(|st| {
        let positions = tile.positions.len() * tile.members.max(1);
        tile.isa == Isa::Avx512 && st.pixels > 0 && positions.is_multiple_of(st.pixels)
    });
    // Merged column phases: a channels tile, each vector a phase, whose
    // own stores take every phase's pixels of a channel in one vector.
    let members_ok = tile.members <= 1
        || (tile.form == Form::Channels
            && tile.vectors == tile.members
            && tile.stores.as_ref().is_none_or(|st| {
                st.pixel_step == 1 && st.pixels == tile.members * tile.positions.len()
            })
            && tile.members * tile.positions.len() <= 16);
    // Masks are an AVX-512 pixels tile's, one per tap and position.
    let masks_ok = tile.masks.is_empty()
        || (tile.isa == Isa::Avx512
            && matches!(tile.form, Form::Pixels(_))
            && tile.masks.len() == tile.taps.taps.len() * tile.positions.len());
    // Deinterleaving loads are an AVX-512 pixels tile's, always masked.
    let deinterleave_ok = !tile.deinterleave
        || (tile.isa == Isa::Avx512
            && matches!(tile.form, Form::Pixels(_))
            && !tile.masks.is_empty());
    if !tile.isa.is_assembled()
        || registers > 16
        || tile.accumulators() == 0
        || !stores_ok
        || !members_ok
        || !masks_ok
        || !deinterleave_ok
    {
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
    let mut e = Emit { a: &mut a, tile, held: [None; 2] };
    e.function().map_err(fail)?;
    let instructions = a.instructions().to_vec();
    let bytes = a.assemble(0).map_err(fail)?;
    Ok((bytes, instructions))
}

/// The vector registers a tile holds through a tap: the weight vectors
/// (channels in lanes), or the fewer of its channels' broadcast weights
/// and its pixel vectors (pixels in lanes).
fn reused(tile: &Tile) -> usize {
    match tile.form {
        Form::Channels | Form::Depthwise => tile.vectors,
        Form::Pixels(_) => tile.vectors.min(tile.positions.len()),
    }
}

/// Whether the tile needs one more vector register on AVX2 (AVX-512
/// takes its scratch registers from `zmm16`–`zmm31`): to broadcast an
/// operand into (AVX2 has no embedded broadcast) where the broadcast
/// operand is the one read by each FMA, or, in a pixels tile that holds
/// its weights, to load a vector several taps share
/// ([`Emit::held_weight_taps`]).
fn scratch(tile: &Tile) -> bool {
    let needs = match tile.form {
        Form::Channels | Form::Pixels(_) => true,
        Form::Depthwise => false,
    };
    tile.isa == Isa::Avx2 && needs
}

/// An assembler and the tile it writes.
struct Emit<'a> {
    a: &'a mut CodeAssembler,
    tile: &'a Tile,
    /// The lanes `k3` and `k5` hold where the code emitted last runs,
    /// when known: a load under the same mask does not build it again.
    /// Unknown at a label (a loop's top is reached from its end too).
    held: [Option<u16>; 2],
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
                // Merged column phases share their channels' bias.
                let bias = if self.tile.members > 1 { 0 } else { v as i64 * vb };
                match self.tile.form {
                    Form::Channels | Form::Depthwise => self.mov_load(v * p + q, rdx, bias)?,
                    // Channel v's bias in every lane.
                    Form::Pixels(_) => self.broadcast_load(v * p + q, rdx, v as i64 * 4)?,
                }
            }
        }
        let has_taps = !self.tile.taps.taps.is_empty() && self.tile.taps.rows > 0;
        // A tile with masks builds them in `r9`: the channels to store
        // wait in `xmm31` (a pixels tile's epilogue reads them last).
        let masked = !self.tile.masks.is_empty();
        if masked {
            self.evex(|a| a.vmovq(xmm31, r9))?;
        }
        if self.tile.deinterleave && has_taps {
            // The mask of the even elements of a full vector in `k4`.
            self.a.mov(r9d, u32::from(EVEN_LANES))?;
            self.a.kmovw(k4, r9d)?;
        }
        if has_taps {
            let unroll = self.tile.unroll.clamp(1, self.tile.channels.max(1));
            let (full, rest) = (self.tile.channels / unroll, self.tile.channels % unroll);
            if full == 1 {
                // One iteration (a depthwise tile's one channel): no loop.
                self.channels(unroll)?;
                if rest > 0 {
                    self.advance(rdi, unroll as i64 * self.tile.plane)?;
                    self.advance(rsi, unroll as i64 * self.tile.w_channel)?;
                }
            } else if full > 1 {
                let mut top = self.a.create_label();
                self.a.mov(rax, full as u64)?;
                self.label(&mut top)?;
                self.channels(unroll)?;
                self.advance(rdi, unroll as i64 * self.tile.plane)?;
                self.advance(rsi, unroll as i64 * self.tile.w_channel)?;
                self.a.sub(rax, 1)?;
                self.a.jne(top)?;
            }
            self.channels(rest)?;
        }
        if masked {
            self.evex(|a| a.vmovq(r9, xmm31))?;
        }
        if self.tile.deinterleave && has_taps {
            self.pixels_in_order()?;
        }
        if let Form::Pixels(stores) = &self.tile.form {
            self.pixel_stores(stores)?;
        } else {
            for a in 0..self.accs() {
                self.mov_store(rcx, a as i64 * vb, a)?;
            }
            if let Some(stores) = &self.tile.stores {
                self.stores(stores)?;
            }
        }
        self.a.vzeroupper()?;
        self.a.ret()
    }

    /// `emit`'s instructions EVEX-encoded, as `xmm16`–`xmm31` need.
    fn evex(&mut self, emit: impl FnOnce(&mut CodeAssembler) -> R) -> R {
        self.a.set_prefer_vex(false);
        let done = emit(self.a);
        self.a.set_prefer_vex(true);
        done
    }

    /// The f32 at `base + off` broadcast to every lane of register `reg`.
    fn broadcast_load(&mut self, reg: usize, base: AsmRegister64, off: i64) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vbroadcastss(ZMM[reg], dword_ptr(base + disp(off)?)),
            _ => self.a.vbroadcastss(YMM[reg], dword_ptr(base + disp(off)?)),
        }
    }

    /// `acc += a · b`, registers.
    fn fma(&mut self, acc: usize, a: usize, b: usize) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vfmadd231ps(ZMM[acc], ZMM[a], ZMM[b]),
            _ => self.a.vfmadd231ps(YMM[acc], YMM[a], YMM[b]),
        }
    }

    /// `acc += a · vector at base + off`.
    fn fma_vector(&mut self, acc: usize, a: usize, base: AsmRegister64, off: i64) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vfmadd231ps(ZMM[acc], ZMM[a], zmmword_ptr(base + disp(off)?)),
            _ => self.a.vfmadd231ps(YMM[acc], YMM[a], ymmword_ptr(base + disp(off)?)),
        }
    }

    /// The lanes of position `q` that tap `tap` loads (see [`Tile::masks`]),
    /// when not all of them.
    fn lanes_of(&self, tap: usize, q: usize) -> Option<u16> {
        Some(self.lanes(tap, q)).filter(|&mask| mask != u16::MAX)
    }

    /// The lanes of position `q` that tap `tap` loads: its mask, or every
    /// lane (`u16::MAX`) in a tile without masks.
    fn lanes(&self, tap: usize, q: usize) -> u16 {
        self.tile.masks.get(tap * self.positions() + q).copied().unwrap_or(u16::MAX)
    }

    /// The vector at `x + off` into `reg` (AVX-512), only the lanes of
    /// `mask`, the others zero: a masked-off lane reads no memory.
    fn masked_load(&mut self, reg: AsmRegisterZmm, x: AsmRegister64, off: i64, mask: u16) -> R {
        self.mask(false, mask)?;
        self.a.vmovups(reg.k3().z(), zmmword_ptr(x + disp(off)?))
    }

    /// `lanes` in `k3`, or in `k5` for the `second` vector of a
    /// deinterleaved load, unless it holds them already.
    fn mask(&mut self, second: bool, lanes: u16) -> R {
        let held = &mut self.held[usize::from(second)];
        if *held == Some(lanes) {
            return Ok(());
        }
        *held = Some(lanes);
        // `r9` is free through the reduction (see `function`).
        self.a.mov(r9d, u32::from(lanes))?;
        self.a.kmovw(if second { k5 } else { k3 }, r9d)
    }

    /// A label here: what the mask registers hold is unknown past it.
    fn label(&mut self, label: &mut CodeLabel) -> R {
        self.held = [None; 2];
        self.a.set_label(label)
    }

    /// Position `q`'s pixel vector for tap `tap`, at `x + off`, into
    /// register `reg`: deinterleaved, under its mask, or whole.
    fn position_load(
        &mut self,
        reg: usize,
        x: AsmRegister64,
        off: i64,
        (tap, q): (usize, usize),
    ) -> R {
        if self.tile.deinterleave {
            self.deinterleaved_load(ZMM[reg], x, off, self.lanes(tap, q))
        } else if let Some(mask) = self.lanes_of(tap, q) {
            self.masked_load(ZMM[reg], x, off, mask)
        } else {
            self.mov_load(reg, x, off)
        }
    }

    /// The vector of `mask`'s lanes (see [`Tile::masks`]) of a
    /// deinterleaving tile at `x + off` into `reg`: the 32 elements from
    /// there loaded as two vectors, each under the mask of the even
    /// elements its lanes need (`k4` when all of them, else built in `k3`
    /// and `k5`), then the even ones kept by an in-lane shuffle (`zmm17`
    /// the second vector), in the order of [`SHUFFLED_PIXELS`].
    fn deinterleaved_load(
        &mut self,
        reg: AsmRegisterZmm,
        x: AsmRegister64,
        off: i64,
        mask: u16,
    ) -> R {
        self.window(x, off, [mask, 0])?;
        self.a.vshufps(reg, zmm16, zmm17, EVEN_ELEMENTS)
    }

    /// The 32 elements at `x + off` as two vectors in `zmm16` and `zmm17`,
    /// loaded under the elements that the lanes `even` of the vector of
    /// their even elements and `odd` of the vector of their odd ones read
    /// (see [`Tile::masks`]).
    fn window(&mut self, x: AsmRegister64, off: i64, [even, odd]: [u16; 2]) -> R {
        let elements =
            |shift: u16| spread((even >> shift) as u8) | spread((odd >> shift) as u8) << 1;
        self.half_load(zmm16, x, off, elements(0), false)?;
        self.half_load(zmm17, x, off + 64, elements(8), true)
    }

    /// A deinterleaving tile's accumulators, whose lanes hold the pixels
    /// in the order of [`SHUFFLED_PIXELS`], back in order, for the
    /// epilogue: one permute each, its indices in `zmm16` from
    /// immediates (the bytes widened to dwords; no memory read).
    fn pixels_in_order(&mut self) -> R {
        let mut lane_of = [0u8; 16];
        for (lane, &pixel) in SHUFFLED_PIXELS.iter().enumerate() {
            lane_of[usize::from(pixel)] = lane as u8;
        }
        let half = |h: usize| u64::from_le_bytes(lane_of[8 * h..8 * h + 8].try_into().unwrap());
        self.a.mov(rax, half(0))?;
        self.evex(|a| a.vmovq(xmm16, rax))?;
        self.a.mov(rax, half(1))?;
        self.evex(|a| a.vpinsrq(xmm16, xmm16, rax, 1))?;
        self.a.vpmovzxbd(zmm16, xmm16)?;
        for &acc in &ZMM[..self.accs()] {
            self.a.vpermps(acc, zmm16, acc)?;
        }
        Ok(())
    }

    /// One of the two vectors of a deinterleaved load into `reg`: the
    /// elements `lanes` at `x + off` (every one unmasked; the even ones
    /// under `k4`; others under a mask built in `k3` for the first vector,
    /// `k5` for the `second`), the others zero.
    fn half_load(
        &mut self,
        reg: AsmRegisterZmm,
        x: AsmRegister64,
        off: i64,
        lanes: u16,
        second: bool,
    ) -> R {
        let address = zmmword_ptr(x + disp(off)?);
        match lanes {
            u16::MAX => self.a.vmovups(reg, address),
            EVEN_LANES => self.a.vmovups(reg.k4().z(), address),
            _ => {
                self.mask(second, lanes)?;
                match second {
                    true => self.a.vmovups(reg.k5().z(), address),
                    false => self.a.vmovups(reg.k3().z(), address),
                }
            }
        }
    }

    /// The registers a pixels tile holds its taps' weights in (see
    /// [`Emit::held_weight_taps`]): those past the accumulators but the
    /// one a shared input vector is loaded into (`zmm16` on AVX-512, which
    /// adds `zmm17`–`zmm30`, or `zmm19`–`zmm30` past a deinterleaving
    /// tile's; `ymm15` on AVX2).
    fn weight_registers(&self) -> Vec<usize> {
        match self.tile.isa {
            // A deinterleaving tile's loads and shuffles take
            // `zmm16`–`zmm18`.
            Isa::Avx512 if self.tile.deinterleave => (self.accs()..16).chain(19..31).collect(),
            Isa::Avx512 => (self.accs()..16).chain(17..31).collect(),
            _ => (self.accs()..self.shared_register()).collect(),
        }
    }

    /// The register a pixels tile that holds its weights loads a shared
    /// input vector into (see [`Emit::held_weight_taps`]): `zmm16`, or
    /// `ymm15` on AVX2 ([`scratch`] counts it).
    fn shared_register(&self) -> usize {
        if self.tile.isa == Isa::Avx512 { 16 } else { 15 }
    }

    /// The taps of one row iteration of a pixels-in-lanes tile whose
    /// channels' weights are held in registers (no more channels than
    /// pixel vectors), the input at `x + x_off`, the weights at `w +
    /// w_off`. A tile of several rows reads the same input vector for
    /// several taps: row `r`'s tap of kernel row `ky + 1` reads what row
    /// `r + 1`'s tap of kernel row `ky` does. Each such vector is loaded
    /// once (under its mask) and multiplied into every accumulator that
    /// reads it, so a tile of `R` rows of a `K`-row kernel loads a share
    /// `(R + K − 1) / (R · K)` of the vectors its FMAs read — an unaligned
    /// 512-bit load that splits a cache line costs two of a core's load
    /// slots, and those loads, not the FMAs, bounded a tile that read each
    /// vector itself. The taps are taken in chunks whose weights fit the
    /// registers: the taps that share vectors together (a kernel column).
    /// A vector read by one tap alone, under no mask, is the FMA's memory
    /// operand; a tap whose mask loads no lane adds nothing (its inputs
    /// are padding) and is left out.
    fn held_weight_taps(
        &mut self,
        x: AsmRegister64,
        w: AsmRegister64,
        x_off: i64,
        w_off: i64,
    ) -> R {
        let m = self.tile.vectors;
        let taps = self.tile.taps.taps.clone();
        let registers = self.weight_registers();
        let reads = self.shared_reads();
        // A deinterleaving tile's reads one input pixel apart: the second's
        // elements are the odd ones of the first's 32.
        let twins: Vec<Option<usize>> = match self.tile.deinterleave {
            true => {
                let at: HashMap<i64, usize> =
                    reads.iter().enumerate().map(|(n, r)| (r.at, n)).collect();
                reads.iter().map(|r| at.get(&(r.at + 4)).copied()).collect()
            }
            false => vec![None; reads.len()],
        };
        let most = (registers.len() / m).max(1);
        for chunk in chunks(&reads, &twins, taps.len(), most) {
            // Tap `i`'s weights in registers `slot[i] · m …`.
            let mut slot = vec![None; taps.len()];
            for (s, &i) in chunk.iter().enumerate() {
                slot[i] = Some(s * m);
                for c in 0..m {
                    let at = w_off + taps[i].0 + 4 * c as i64;
                    self.broadcast_load(registers[s * m + c], w, at)?;
                }
            }
            // Each read's (first weight register, position) pairs of this
            // chunk's taps.
            let users: Vec<Vec<(usize, usize)>> = reads
                .iter()
                .map(|r| r.users.iter().filter_map(|&(i, q)| Some((slot[i]?, q))).collect())
                .collect();
            let mut done = vec![false; reads.len()];
            for (n, read) in reads.iter().enumerate() {
                if done[n] || users[n].is_empty() {
                    continue;
                }
                done[n] = true;
                let at = x_off + read.at;
                if self.tile.deinterleave {
                    let twin = twins[n].filter(|&t| !done[t] && !users[t].is_empty());
                    if let Some(t) = twin {
                        done[t] = true;
                        self.twin_load(x, at, [read.lanes, reads[t].lanes])?;
                        self.multiply(&users[n], &registers, 18)?;
                        self.multiply(&users[t], &registers, 16)?;
                    } else {
                        self.deinterleaved_load(zmm16, x, at, read.lanes)?;
                        self.multiply(&users[n], &registers, 16)?;
                    }
                    continue;
                }
                let temp = self.shared_register();
                match (&users[n][..], read.lanes) {
                    // Read once, whole: the FMA's memory operand.
                    (&[(first, q)], u16::MAX) => {
                        for c in 0..m {
                            let acc = c * self.positions() + q;
                            self.fma_vector(acc, registers[first + c], x, at)?;
                        }
                        continue;
                    }
                    (_, u16::MAX) => self.mov_load(temp, x, at)?,
                    (_, lanes) => self.masked_load(ZMM[temp], x, at, lanes)?,
                }
                self.multiply(&users[n], &registers, temp)?;
            }
        }
        Ok(())
    }

    /// The vector in register `pixels` multiplied into the accumulators of
    /// `users`, each (first weight register, position) with its channels'
    /// weights in `registers`.
    fn multiply(&mut self, users: &[(usize, usize)], registers: &[usize], pixels: usize) -> R {
        let j = self.positions();
        for &(first, q) in users {
            for c in 0..self.tile.vectors {
                self.fma(c * j + q, registers[first + c], pixels)?;
            }
        }
        Ok(())
    }

    /// A deinterleaving tile's two reads one input pixel apart, at `x +
    /// off` and one pixel on, under `lanes` each (see [`Tile::masks`]):
    /// the 32 elements from `x + off` loaded once, under the union of the
    /// two reads' masks, the first read's even elements kept in `zmm18`
    /// and the second's odd ones in `zmm16` (in-lane shuffles, in the
    /// order of [`SHUFFLED_PIXELS`]).
    fn twin_load(&mut self, x: AsmRegister64, off: i64, lanes: [u16; 2]) -> R {
        self.window(x, off, lanes)?;
        self.a.vshufps(zmm18, zmm16, zmm17, EVEN_ELEMENTS)?;
        self.a.vshufps(zmm16, zmm16, zmm17, ODD_ELEMENTS)
    }

    /// Each vector the taps of one row iteration read (its input offset
    /// and lanes), with the (tap, position) pairs that read it, in the
    /// order the taps first read them; a pair whose mask loads no lane
    /// reads nothing.
    fn shared_reads(&self) -> Vec<Read> {
        let mut reads: Vec<Read> = Vec::new();
        let mut index: HashMap<(i64, u16), usize> = HashMap::new();
        for (i, &(_, tx)) in self.tile.taps.taps.iter().enumerate() {
            for (q, &at) in self.tile.positions.iter().enumerate() {
                let lanes = self.lanes(i, q);
                if lanes == 0 {
                    continue;
                }
                let n = *index.entry((tx + at, lanes)).or_insert_with(|| {
                    reads.push(Read { at: tx + at, lanes, users: Vec::new() });
                    reads.len() - 1
                });
                reads[n].users.push((i, q));
            }
        }
        reads
    }

    /// One tap of a pixels-in-lanes tile (see [`Form::Pixels`]) of more
    /// channels than pixel vectors, the input at `x + x_at`, the weights
    /// at `w + w_at`; `tap` its index, for its masks: the pixel vectors in
    /// registers, each weight broadcast by its FMAs (from memory on
    /// AVX-512, into a register on AVX2).
    fn pixel_tap(
        &mut self,
        x: AsmRegister64,
        w: AsmRegister64,
        x_at: i64,
        w_at: i64,
        tap: usize,
    ) -> R {
        let (accs, m, j) = (self.accs(), self.tile.vectors, self.positions());
        // The positions whose inputs at this tap are not all padding.
        let live: Vec<usize> = (0..j).filter(|&q| self.lanes(tap, q) != 0).collect();
        let positions = self.tile.positions.clone();
        for &q in &live {
            self.position_load(accs + q, x, x_at + positions[q], (tap, q))?;
        }
        for c in 0..m {
            let weight = disp(w_at + 4 * c as i64)?;
            match self.tile.isa {
                Isa::Avx512 => {
                    for &q in &live {
                        let (acc, pixels) = (ZMM[c * j + q], ZMM[accs + q]);
                        self.a.vfmadd231ps(acc, pixels, dword_bcst(w + weight))?;
                    }
                }
                _ => {
                    let tmp = accs + j;
                    self.a.vbroadcastss(YMM[tmp], dword_ptr(w + weight))?;
                    for &q in &live {
                        self.fma(c * j + q, accs + q, tmp)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The epilogue of a pixels-in-lanes tile (see [`PixelStores`]): with
    /// the reduction done, the registers past the accumulators are free.
    fn pixel_stores(&mut self, st: &PixelStores) -> R {
        let (accs, m, j) = (self.accs(), self.tile.vectors, self.positions());
        let (zero, constant) = (accs, accs + 1);
        let avx512 = self.tile.isa == Isa::Avx512;
        let vb = self.tile.isa.bytes() as i64;
        // Constants: zero in a register; 6 or the slope in `acc` past the
        // accumulators' block, read as a memory operand (AVX2 keeps only
        // two registers free).
        let constant_at = (accs as i64) * vb;
        self.vxor(zero)?;
        let bits = match st.activation {
            Activation::Relu6 => Some(6.0f32.to_bits()),
            Activation::LeakyRelu(slope) => Some(slope),
            _ => None,
        };
        if let Some(bits) = bits {
            self.a.mov(eax, bits)?;
            if avx512 {
                self.a.vpbroadcastd(ZMM[constant], eax)?;
            } else {
                self.a.vmovd(XMM[constant], eax)?;
                self.a.vbroadcastss(YMM[constant], XMM[constant])?;
            }
            self.mov_store(rcx, constant_at, constant)?;
        }
        // With the sum epilogue each register is activated once its
        // outputs' previous values are added, just before its stores.
        if !st.sum {
            for a in 0..accs {
                self.activate_pixels(a, st.activation, zero, constant, constant_at)?;
            }
        }
        let mut done = self.a.create_label();
        for c in 0..m {
            if c >= st.min_lanes {
                self.a.cmp(r9, c as i32)?;
                self.a.jbe(done)?;
            }
            for q in 0..j {
                let (a, valid) = (c * j + q, st.valid[q]);
                let off = c as i64 * st.out_plane + st.out[q];
                let lanes = self.tile.isa.lanes();
                if st.sum {
                    self.add_previous(a, off, valid, st.out_step)?;
                    self.activate_pixels(a, st.activation, zero, constant, constant_at)?;
                }
                if st.out_step == 4 && valid == lanes {
                    self.mov_store(r8, off, a)?;
                } else if st.out_step == 4 && avx512 {
                    self.a.mov(eax, (1u32 << valid) - 1)?;
                    self.a.kmovw(k1, eax)?;
                    self.a.vmovups(zmmword_ptr(r8 + disp(off)?).k1(), ZMM[a])?;
                } else if st.out_step == 4 {
                    // `constant` is free between activations (`zero` is not).
                    self.partial_store(off, a, valid, constant)?;
                } else {
                    // Lane by lane, through the accumulator block.
                    self.mov_store(rcx, 0, a)?;
                    for lane in 0..valid as i64 {
                        self.a.mov(eax, dword_ptr(rcx + disp(4 * lane)?))?;
                        self.a.mov(dword_ptr(r8 + disp(off + lane * st.out_step)?), eax)?;
                    }
                }
            }
        }
        self.a.set_label(&mut done)?;
        Ok(())
    }

    /// A pixels tile's activation of register `a`: `zero` holds zeros,
    /// `constant` is free, and the activation's constant (6 or the slope)
    /// is at `rcx + constant_at`.
    fn activate_pixels(
        &mut self,
        a: usize,
        activation: Activation,
        zero: usize,
        constant: usize,
        constant_at: i64,
    ) -> R {
        match activation {
            Activation::None => {}
            Activation::Relu => self.maxps(a, zero, a)?,
            Activation::Relu6 => {
                self.maxps(a, zero, a)?;
                self.mov_load(constant, rcx, constant_at)?;
                self.minps(a, constant, a)?;
            }
            Activation::LeakyRelu(_) => {
                // max(x, 0) + slope · min(x, 0): NaN and −0 kept.
                self.minps(constant, zero, a)?;
                self.mulps_mem(constant, rcx, constant_at)?;
                self.maxps(a, zero, a)?;
                self.addps(a, a, constant)?;
            }
        }
        Ok(())
    }

    /// The sum epilogue of a pixels tile: register `a` plus the `valid`
    /// outputs it is stored to (at `y + off`, `step` bytes apart) — one
    /// add reading a whole vector, or the valid lanes under a mask
    /// (AVX-512), or, for a partial AVX2 vector or pixels not side by side,
    /// the valid lanes copied into the start of the `acc` block (free
    /// once the accumulators are in registers) and added from there.
    fn add_previous(&mut self, a: usize, off: i64, valid: usize, step: i64) -> R {
        let lanes = self.tile.isa.lanes();
        if step == 4 && valid == lanes {
            return self.addps_mem(a, r8, off);
        }
        if step == 4 && self.tile.isa == Isa::Avx512 {
            self.a.mov(eax, (1u32 << valid) - 1)?;
            self.a.kmovw(k1, eax)?;
            let previous = zmmword_ptr(r8 + disp(off)?);
            return self.a.vaddps(ZMM[a].k1(), ZMM[a], previous);
        }
        for lane in 0..valid as i64 {
            self.a.mov(eax, dword_ptr(r8 + disp(off + lane * step)?))?;
            self.a.mov(dword_ptr(rcx + disp(4 * lane)?), eax)?;
        }
        self.addps_mem(a, rcx, 0)
    }

    /// The first `valid` (below 8) lanes of AVX2 register `a` stored at
    /// `y + off`, in pieces of 4, 2 and 1 lanes (AVX2's masked store is
    /// slow on some cores, and the lane-by-lane copy through `acc` takes
    /// two instructions a lane); `free` is a register the stores may use.
    fn partial_store(&mut self, off: i64, a: usize, valid: usize, free: usize) -> R {
        let (mut from, mut at, mut left) = (XMM[a], off, valid);
        if left >= 4 {
            self.a.vmovups(xmmword_ptr(r8 + disp(at)?), XMM[a])?;
            self.a.vextractf128(XMM[free], YMM[a], 1)?;
            (from, at, left) = (XMM[free], at + 16, left - 4);
        }
        if left >= 2 {
            self.a.vmovlps(qword_ptr(r8 + disp(at)?), from)?;
            if left == 3 {
                self.a.vextractps(dword_ptr(r8 + disp(at + 8)?), from, 2)?;
            }
        } else if left == 1 {
            self.a.vmovss(dword_ptr(r8 + disp(at)?), from)?;
        }
        Ok(())
    }

    fn vxor(&mut self, r: usize) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vxorps(ZMM[r], ZMM[r], ZMM[r]),
            _ => self.a.vxorps(YMM[r], YMM[r], YMM[r]),
        }
    }

    /// `d = a > b ? a : b` (`b` when either is NaN).
    fn maxps(&mut self, d: usize, a: usize, b: usize) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vmaxps(ZMM[d], ZMM[a], ZMM[b]),
            _ => self.a.vmaxps(YMM[d], YMM[a], YMM[b]),
        }
    }

    /// `d = a < b ? a : b` (`b` when either is NaN).
    fn minps(&mut self, d: usize, a: usize, b: usize) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vminps(ZMM[d], ZMM[a], ZMM[b]),
            _ => self.a.vminps(YMM[d], YMM[a], YMM[b]),
        }
    }

    fn addps(&mut self, d: usize, a: usize, b: usize) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vaddps(ZMM[d], ZMM[a], ZMM[b]),
            _ => self.a.vaddps(YMM[d], YMM[a], YMM[b]),
        }
    }

    /// `d += the vector at base + off`.
    fn addps_mem(&mut self, d: usize, base: AsmRegister64, off: i64) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vaddps(ZMM[d], ZMM[d], zmmword_ptr(base + disp(off)?)),
            _ => self.a.vaddps(YMM[d], YMM[d], ymmword_ptr(base + disp(off)?)),
        }
    }

    /// `d *= the vector at base + off`.
    fn mulps_mem(&mut self, d: usize, base: AsmRegister64, off: i64) -> R {
        match self.tile.isa {
            Isa::Avx512 => self.a.vmulps(ZMM[d], ZMM[d], zmmword_ptr(base + disp(off)?)),
            _ => self.a.vmulps(YMM[d], YMM[d], ymmword_ptr(base + disp(off)?)),
        }
    }

    /// The epilogue of [`Stores`] (AVX-512; see the module's notes).
    fn stores(&mut self, st: &Stores) -> R {
        let p = self.positions();
        let rows = self.tile.store_rows(st);
        let members = self.tile.members.max(1);
        // Merged column phases are one vector of channels whose row holds
        // position `q` of phase `v` at pixel `q · members + v`: the
        // transpose's row of that pixel is loaded with accumulator `(v, q)`.
        let (vectors, slots) = if members > 1 { (1, p * members) } else { (self.tile.vectors, p) };
        let accumulator = |v: usize, slot: usize| match members {
            1 => v * p + slot,
            m => (slot % m) * p + slot / m,
        };
        for v in 0..vectors {
            // Set for each vector of channels: the transpose of the one
            // before used every register from zmm16 on. (With the sum
            // epilogue the stores activate, once the transpose is done.)
            if !st.sum {
                self.epilogue_constants(st.activation)?;
            }
            for (q, &r) in ZMM[..16].iter().enumerate() {
                if q >= slots {
                    self.a.vxorps(r, r, r)?;
                    continue;
                }
                let acc = accumulator(v, q);
                self.a.vmovups(r, zmmword_ptr(rcx + disp((acc * 64) as i64)?))?;
                // With the sum epilogue the stores activate.
                if !st.sum {
                    self.activate_zmm(r, st.activation)?;
                }
            }
            self.transpose()?;
            if st.sum {
                self.epilogue_constants(st.activation)?;
            }
            for row in 0..rows {
                if st.pixel_step == 1 {
                    let mask = ((1u32 << st.pixels) - 1) << (row * st.pixels);
                    let off = row as i64 * st.out_row - (row * st.pixels * 4) as i64;
                    self.row_stores(v, st, mask, off, |_, register| Ok(register))?;
                    continue;
                }
                // Pixels `step` apart: runs of up to ⌈16 / step⌉ of the
                // row's pixels, each rotated down to lane 0 and spread to
                // every step-th lane, stored under the same mask.
                let step = st.pixel_step;
                let run = 16usize.div_ceil(step);
                for first in (0..st.pixels).step_by(run) {
                    let count = run.min(st.pixels - first);
                    let mask = (0..count).fold(0u32, |m, i| m | 1 << (i * step));
                    let (shift, spread) = (row * st.pixels + first, ZMM[18]);
                    let off = row as i64 * st.out_row + (first * step * 4) as i64;
                    self.row_stores(v, st, mask, off, |a, register| {
                        let source = if shift == 0 {
                            register
                        } else {
                            a.valignd(spread, register, register, shift as i32)?;
                            spread
                        };
                        a.vexpandps(spread.k1().z(), source)?;
                        Ok(spread)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// One masked store per channel of vector `v` (the first `lanes`),
    /// under `mask`, at `off` past the channel's plane: of the register
    /// `prepare` makes of the channel's register (in `k1` the mask).
    fn row_stores(
        &mut self,
        v: usize,
        st: &Stores,
        mask: u32,
        off: i64,
        mut prepare: impl FnMut(&mut CodeAssembler, AsmRegisterZmm) -> Result<AsmRegisterZmm, IcedError>,
    ) -> R {
        self.a.mov(eax, mask)?;
        self.a.kmovw(k1, eax)?;
        let mut done = self.a.create_label();
        for (c, &register) in ZMM[..16].iter().enumerate() {
            let channel = v * 16 + c;
            if channel >= st.min_lanes {
                self.a.cmp(r9, channel as i32)?;
                self.a.jbe(done)?;
            }
            let mut stored = prepare(self.a, register)?;
            let off = channel as i64 * st.out_plane + off;
            if st.sum {
                // The previous outputs under the store's mask, added into
                // `zmm18` (the channel's register serves the other rows).
                let sum = ZMM[18];
                self.a.vaddps(sum.k1().z(), stored, zmmword_ptr(r8 + disp(off)?))?;
                self.activate_zmm(sum, st.activation)?;
                stored = sum;
            }
            self.a.vmovups(zmmword_ptr(r8 + disp(off)?).k1(), stored)?;
        }
        // The label goes on the next instruction: the next row's mask, the
        // next vector's first load, or `vzeroupper`.
        self.a.set_label(&mut done)
    }

    /// The constants of the AVX-512 channels epilogue's activation: zeros
    /// in `zmm16`, 6 or the slope in `zmm17`.
    fn epilogue_constants(&mut self, activation: Activation) -> R {
        let (zero, constant) = (ZMM[16], ZMM[17]);
        self.a.vxorps(zero, zero, zero)?;
        match activation {
            Activation::Relu6 => self.broadcast_bits(constant, 6.0f32.to_bits()),
            Activation::LeakyRelu(slope) => self.broadcast_bits(constant, slope),
            Activation::None | Activation::Relu => Ok(()),
        }
    }

    /// The activation of `r` in the AVX-512 channels epilogue, with the
    /// constants [`Self::epilogue_constants`] set.
    fn activate_zmm(&mut self, r: AsmRegisterZmm, activation: Activation) -> R {
        let (zero, constant) = (ZMM[16], ZMM[17]);
        match activation {
            Activation::None => {}
            // `vmaxps a, b` gives b when either is NaN: NaN stays.
            Activation::Relu => self.a.vmaxps(r, zero, r)?,
            Activation::Relu6 => {
                self.a.vmaxps(r, zero, r)?;
                self.a.vminps(r, constant, r)?;
            }
            Activation::LeakyRelu(_) => {
                // Below zero (false for NaN): times the slope.
                self.a.vcmpps(k2, r, zero, 1)?; // LT_OS
                self.a.vmulps(r.k2(), r, constant)?;
            }
        }
        Ok(())
    }

    /// `bits` as an f32 in every lane of `reg`.
    fn broadcast_bits(&mut self, reg: AsmRegisterZmm, bits: u32) -> R {
        self.a.mov(eax, bits)?;
        self.a.vpbroadcastd(reg, eax)
    }

    /// Transposes the 16 × 16 floats of `zmm0`–`zmm15` (row `q` =
    /// position `q`, lane = channel) so that `zmm c` holds channel `c`,
    /// through `zmm16`–`zmm31`.
    fn transpose(&mut self) -> R {
        let (z, t) = (&ZMM[..16], &ZMM[16..]);
        // Floats of row pairs interleaved: T[2k], T[2k+1].
        for k in 0..8 {
            self.a.vunpcklps(t[2 * k], z[2 * k], z[2 * k + 1])?;
            self.a.vunpckhps(t[2 * k + 1], z[2 * k], z[2 * k + 1])?;
        }
        // Pairs of those: U[4m + c] holds, in 128-bit block b, positions
        // 4m..4m+3 of channel 4b + c.
        for m in 0..4 {
            let (a, b) = (4 * m, 4 * m + 2);
            self.a.vunpcklpd(z[4 * m], t[a], t[b])?;
            self.a.vunpckhpd(z[4 * m + 1], t[a], t[b])?;
            self.a.vunpcklpd(z[4 * m + 2], t[a + 1], t[b + 1])?;
            self.a.vunpckhpd(z[4 * m + 3], t[a + 1], t[b + 1])?;
        }
        // The 128-bit blocks of the four registers of each c transposed:
        // channel 4b + c lands in register 4b + c.
        for c in 0..4 {
            let u = [z[c], z[4 + c], z[8 + c], z[12 + c]];
            let s = [t[4 * c], t[4 * c + 1], t[4 * c + 2], t[4 * c + 3]];
            self.a.vshuff32x4(s[0], u[0], u[1], 0x44)?;
            self.a.vshuff32x4(s[1], u[0], u[1], 0xEE)?;
            self.a.vshuff32x4(s[2], u[2], u[3], 0x44)?;
            self.a.vshuff32x4(s[3], u[2], u[3], 0xEE)?;
            self.a.vshuff32x4(z[c], s[0], s[2], 0x88)?;
            self.a.vshuff32x4(z[4 + c], s[0], s[2], 0xDD)?;
            self.a.vshuff32x4(z[8 + c], s[1], s[3], 0x88)?;
            self.a.vshuff32x4(z[12 + c], s[1], s[3], 0xDD)?;
        }
        Ok(())
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
            self.a.lea(r10, qword_ptr(rdi + disp(u * plane)?))?;
            self.a.lea(r11, qword_ptr(rsi + disp(u * wch)?))?;
            self.a.mov(rdx, self.tile.taps.rows as u64)?;
            let mut row = self.a.create_label();
            self.label(&mut row)?;
            self.taps(r10, r11, 0, 0)?;
            self.advance(r10, x_step)?;
            self.advance(r11, w_step)?;
            self.a.sub(rdx, 1)?;
            self.a.jne(row)?;
        }
        Ok(())
    }

    /// One row iteration's taps, the input at `x + x_off`, the weights at
    /// `w + w_off`: per tap, the weight vectors loaded, then each
    /// position's pixel (depthwise: each plane's vector of it) multiplied
    /// into its accumulators.
    fn taps(&mut self, x: AsmRegister64, w: AsmRegister64, x_off: i64, w_off: i64) -> R {
        let (accs, vectors, p) = (self.accs(), self.tile.vectors, self.positions());
        let vb = self.tile.isa.bytes() as i64;
        let taps = self.tile.taps.taps.clone();
        if matches!(self.tile.form, Form::Pixels(_)) {
            if vectors <= p {
                return self.held_weight_taps(x, w, x_off, w_off);
            }
            for (i, &(tw, tx)) in taps.iter().enumerate() {
                self.pixel_tap(x, w, x_off + tx, w_off + tw, i)?;
            }
            return Ok(());
        }
        let plane = self.tile.plane;
        for (tw, tx) in taps {
            for v in 0..vectors {
                self.mov_load(accs + v, w, w_off + tw + v as i64 * vb)?;
            }
            for q in 0..p {
                let off = x_off + tx + self.tile.positions[q];
                let at = disp(off)?;
                match (self.tile.form == Form::Depthwise, self.tile.isa) {
                    // Each weight vector times its plane's vector of the
                    // pixel.
                    (true, _) => {
                        for v in 0..vectors {
                            self.fma_vector(v * p + q, accs + v, x, off + v as i64 * plane)?;
                        }
                    }
                    (false, Isa::Avx512) => {
                        for v in 0..vectors {
                            let (acc, weight) = (ZMM[v * p + q], ZMM[accs + v]);
                            self.a.vfmadd231ps(acc, weight, dword_bcst(x + at))?;
                        }
                    }
                    (false, _) => {
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

/// One vector a pixels tile's taps read ([`Emit::shared_reads`]).
struct Read {
    /// Its input offset from the row iteration's pointer.
    at: i64,
    /// The lanes loaded (every one: `u16::MAX`).
    lanes: u16,
    /// The (tap, position) pairs that read it.
    users: Vec<(usize, usize)>,
}

/// The `taps` taps in chunks of at most `most`, those that share the
/// vectors of `reads` (or, a deinterleaving tile's, the loads of a read
/// and its twin) together: from each tap not yet taken, the taps reached
/// through shared vectors (a kernel column of a tile of several rows; a
/// tap alone where none is shared). A tap that reads no vector is in
/// none.
fn chunks(reads: &[Read], twins: &[Option<usize>], taps: usize, most: usize) -> Vec<Vec<usize>> {
    let mut partners: Vec<Vec<usize>> = vec![Vec::new(); taps];
    for (read, twin) in reads.iter().zip(twins) {
        let shared = twin.map_or(&[][..], |t| &reads[t].users[..]);
        for &(a, _) in &read.users {
            let others = read.users.iter().chain(shared).map(|&(b, _)| b);
            partners[a].extend(others.filter(|&b| b != a));
        }
    }
    // A tap that reads nothing (padding rows only) takes no registers.
    let mut taken = vec![true; taps];
    for read in reads {
        for &(a, _) in &read.users {
            taken[a] = false;
        }
    }
    let mut chunks = Vec::new();
    for first in 0..taps {
        if taken[first] {
            continue;
        }
        taken[first] = true;
        let mut chunk = vec![first];
        let mut k = 0;
        while k < chunk.len() && chunk.len() < most {
            for &b in &partners[chunk[k]] {
                if !taken[b] && chunk.len() < most {
                    taken[b] = true;
                    chunk.push(b);
                }
            }
            k += 1;
        }
        chunks.push(chunk);
    }
    chunks
}

/// The elements of a deinterleaving load's vector that the lanes of a
/// full output vector read: the even ones.
const EVEN_LANES: u16 = 0x5555;

/// `vshufps`'s selector of the even elements of two vectors, within each
/// 128-bit block: the first's 0 and 2, then the second's 0 and 2.
const EVEN_ELEMENTS: u32 = 0x88;

/// `vshufps`'s selector of the odd elements (1 and 3 of each).
const ODD_ELEMENTS: u32 = 0xdd;

/// The pixels in each lane of a deinterleaved vector: block `b` of 4
/// lanes holds the even elements `4b`, `4b + 2` of the first vector and
/// `16 + 4b`, `16 + 4b + 2` of the second — pixels `2b`, `2b + 1`, `8 +
/// 2b`, `9 + 2b`. Every deinterleaved vector of a tile has its pixels in
/// this order, so its FMAs (lane by lane) need no other; the epilogue
/// puts them back in order, one permute per accumulator, where a permute
/// across two vectors per load cost two shuffles of a slower kind.
const SHUFFLED_PIXELS: [u8; 16] = [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15];

/// The mask of the elements `2l` for each lane `l` set in `lanes` (of 8).
fn spread(lanes: u8) -> u16 {
    (0..8).filter(|l| lanes >> l & 1 == 1).fold(0, |m, l| m | 1 << (2 * l))
}
