//! What hand-assembled code is checked for, since Cranelift's verifier
//! and register allocator never see it, and its listing.
//!
//! [`audit`] decodes a tile's bytes and checks that:
//! - they decode to exactly the instructions the assembler was given (the
//!   round trip: no encoding chose another form or operand);
//! - the function keeps the System V ABI: it writes no callee-saved
//!   register (`rbx`, `rbp`, `r12`–`r15`) and not the stack pointer, so it
//!   uses no stack and needs no unwind information; and it ends with
//!   `vzeroupper` then `ret`;
//! - every memory operand is one of its pointer registers plus a constant
//!   (no index, no stack), so the tile's footprint
//!   ([`super::Tile::footprint`]) is all it can address.

use iced_x86::{
    Code, Decoder, DecoderOptions, Formatter, Instruction, InstructionInfoFactory, NasmFormatter,
    OpAccess, OpKind, Register,
};

/// What an audit found in a tile that passed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Audit {
    /// Instructions in the function.
    pub instructions: usize,
    /// Vector multiply-adds in it.
    pub fmas: usize,
}

/// The registers a tile may address memory through: its five pointer
/// arguments (`x`, `w`, `bias`, `acc`, `y`) and the kernel-row loop's two
/// pointers.
const POINTERS: [Register; 7] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R10,
    Register::R11,
];

/// The registers the System V ABI has a function keep for its caller, and
/// the stack pointer.
const KEPT: [Register; 7] = [
    Register::RBX,
    Register::RBP,
    Register::RSP,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// Checks the machine code `bytes` against `intended`, the instructions it
/// was assembled from (see the module's list); the error says which
/// instruction broke which rule.
pub fn audit(bytes: &[u8], intended: &[Instruction]) -> Result<Audit, String> {
    let decoded = decode(bytes);
    if decoded.len() != intended.len() {
        return Err(format!(
            "{} instructions decoded from {} assembled",
            decoded.len(),
            intended.len()
        ));
    }
    let mut info = InstructionInfoFactory::new();
    let mut fmas = 0;
    for (i, (got, want)) in decoded.iter().zip(intended).enumerate() {
        let text = format(got);
        let same = if got.is_jcc_short_or_near() || want.is_jcc_short_or_near() {
            got.code().as_near_branch() == want.code().as_near_branch()
        } else {
            text == format(want)
        };
        if !same {
            return Err(format!(
                "instruction {i} decodes as `{text}`, assembled `{}`",
                format(want)
            ));
        }
        // `ret` pops the return address: the one write of the stack
        // pointer, checked to be the last instruction below.
        let returns = got.code() == Code::Retnq;
        for used in info.info(got).used_registers().iter().filter(|_| !returns) {
            let full = used.register().full_register();
            let writes = !matches!(used.access(), OpAccess::Read | OpAccess::CondRead);
            if writes && KEPT.contains(&full) {
                return Err(format!("instruction {i} `{text}` writes {:?}", full));
            }
        }
        let memory = (0..got.op_count()).any(|o| got.op_kind(o) == OpKind::Memory);
        if memory
            && (!POINTERS.contains(&got.memory_base()) || got.memory_index() != Register::None)
        {
            return Err(format!("instruction {i} `{text}` addresses memory through no pointer"));
        }
        if matches!(got.code(), Code::EVEX_Vfmadd231ps_zmm_k1z_zmm_zmmm512b32_er)
            || matches!(got.code(), Code::VEX_Vfmadd231ps_ymm_ymm_ymmm256)
        {
            fmas += 1;
        }
    }
    let tail: Vec<Code> = decoded.iter().rev().take(2).map(|i| i.code()).collect();
    if tail != [Code::Retnq, Code::VEX_Vzeroupper] {
        return Err("the function does not end with vzeroupper, ret".into());
    }
    Ok(Audit { instructions: decoded.len(), fmas })
}

/// The bytes each pointer argument of a tile's code reads or writes when
/// called with `lanes` as its last argument, found by running its integer
/// instructions (the pointer arithmetic, the loops, the masks) and
/// collecting every memory operand's bytes (a masked store's unmasked
/// lanes only): `[lo, hi)` offsets from `x`, `w`, `bias`, `acc` and `y`
/// (`(0, 0)` for one it never touches). For tests: it takes every
/// iteration of every loop.
pub fn reach(bytes: &[u8], lanes: i64) -> Result<[(i64, i64); 5], String> {
    use iced_x86::Mnemonic as M;
    let code = decode(bytes);
    let at = |ip: u64| code.iter().position(|i| i.ip() == ip);
    // Each register: the argument it points into (0–4) and its offset, or
    // a plain number.
    let arguments = [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8];
    let mut regs: std::collections::HashMap<Register, (Option<usize>, i64)> =
        arguments.iter().enumerate().map(|(i, &r)| (r, (Some(i), 0))).collect();
    regs.insert(Register::R9, (None, lanes));
    let mut reach = [(i64::MAX, i64::MIN); 5];
    // The last comparison's two sides (`sub` compares its result with 0).
    let (mut pc, mut flags, mut steps) = (0usize, (0i64, 0i64), 0u64);
    while pc < code.len() {
        steps += 1;
        if steps > 100_000_000 {
            return Err("more than 10^8 instructions run".into());
        }
        let i = &code[pc];
        let text = format(i);
        let value = |regs: &std::collections::HashMap<_, _>, r: Register| {
            regs.get(&r.full_register()).copied().ok_or(format!("`{text}` reads an unset register"))
        };
        let memory = (0..i.op_count()).any(|o| i.op_kind(o) == OpKind::Memory);
        if memory && i.mnemonic() != M::Lea {
            let Some(&(Some(origin), offset)) = regs.get(&i.memory_base()) else {
                return Err(format!("`{text}` addresses memory through no pointer"));
            };
            let start = offset + i.memory_displacement64() as i64;
            let (lo, hi) = if i.is_broadcast() {
                (start, start + 4)
            } else if i.op_mask() != Register::None {
                let mask = value(&regs, i.op_mask())?.1 as u64;
                let size = i.memory_size().size() as i64 / 4;
                let set: Vec<i64> = (0..size).filter(|b| mask >> b & 1 == 1).collect();
                match (set.first(), set.last()) {
                    (Some(&a), Some(&b)) => (start + 4 * a, start + 4 * (b + 1)),
                    _ => (i64::MAX, i64::MIN),
                }
            } else {
                (start, start + i.memory_size().size() as i64)
            };
            reach[origin] = (reach[origin].0.min(lo), reach[origin].1.max(hi));
        }
        let dest = i.op0_register().full_register();
        match i.mnemonic() {
            M::Mov if i.op0_kind() == OpKind::Register => {
                // An immediate, or a float copied through a register.
                let value = match i.op1_kind() {
                    OpKind::Memory | OpKind::Register => 0,
                    _ => i.immediate(1) as i64,
                };
                regs.insert(dest, (None, value));
            }
            // A register kept in a vector register and brought back.
            M::Vmovq if i.op0_kind() == OpKind::Register && i.op1_kind() == OpKind::Register => {
                let (to, from) =
                    (i.op0_register().full_register(), i.op1_register().full_register());
                let kept =
                    regs.get(&from).copied().ok_or(format!("`{text}` reads an unset register"))?;
                regs.insert(to, kept);
            }
            M::Kmovw => {
                let v = value(&regs, i.op1_register())?;
                regs.insert(i.op0_register(), (None, v.1 & 0xffff));
            }
            M::Lea => {
                let base = value(&regs, i.memory_base())?;
                regs.insert(dest, (base.0, base.1 + i.memory_displacement64() as i64));
            }
            M::Add | M::Sub => {
                let Some(v) = regs.get_mut(&dest) else {
                    return Err(format!("`{text}` on an unset register"));
                };
                let imm = i.immediate(1) as i64;
                v.1 += if i.mnemonic() == M::Add { imm } else { -imm };
                flags = (if v.0.is_none() { v.1 } else { 1 }, 0);
            }
            M::Cmp => flags = (value(&regs, dest)?.1, i.immediate(1) as i64),
            M::Jne if flags.0 != flags.1 => {
                pc = at(i.near_branch_target()).ok_or("a branch into no instruction")?;
                continue;
            }
            M::Jbe if (flags.0 as u64) <= (flags.1 as u64) => {
                pc = at(i.near_branch_target()).ok_or("a branch into no instruction")?;
                continue;
            }
            M::Ret => break,
            _ => {}
        }
        pc += 1;
    }
    Ok(reach.map(|(lo, hi)| if lo > hi { (0, 0) } else { (lo, hi) }))
}

/// The instructions of `bytes`, decoded as 64-bit code at address 0.
fn decode(bytes: &[u8]) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        out.push(decoder.decode());
    }
    out
}

fn format(instruction: &Instruction) -> String {
    let mut text = String::new();
    NasmFormatter::new().format(instruction, &mut text);
    text
}

/// The listing of `bytes`: each instruction's offset and its NASM form.
pub fn listing(bytes: &[u8]) -> String {
    decode(bytes).iter().map(|i| format!("  {:04x}  {}\n", i.ip(), format(i))).collect()
}
