//! The host ISA and the JIT: turning a (spec, schedule) into machine code
//! owned by a [`Kernel`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, ir};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};

use crate::abi::{Code, ConvFn};
use crate::codegen::wide::{self, Linker};
use crate::codegen::{self, Plan, Target};
use crate::error::{Error, Result};
use crate::kernel::{Epilogue, Kernel, WinogradLayer};
use crate::schedule::Schedule;
use crate::source::{self, Request, Resolved, ScheduleSource};
use crate::spec::{ConvSpec, ValidSpec};
use crate::target::Isa;

/// Compiles kernels for one ISA (the host's).
#[derive(Clone)]
pub struct Compiler {
    isa: Arc<dyn TargetIsa>,
    has_fma: bool,
    /// The widest vector ISA its schedules may use (the host's, unless
    /// limited by [`Compiler::with_vector_isa`]).
    vector_isa: Isa,
    /// Whether kernels are compiled in the checked lowering.
    checked: bool,
    /// Schedules chosen ahead of the run (a tuning cache), asked before
    /// the heuristic.
    source: Option<Arc<dyn ScheduleSource>>,
    /// The kernels [`Compiler::compile_shared`] made and someone still
    /// holds, by spec and schedule: shared by this compiler's clones, new
    /// for a compiler of other code (another ISA, the checked lowering).
    shared: SharedKernels,
}

/// Live kernels by their spec and schedule (see [`Compiler::compile_shared`]).
type SharedKernels = Arc<Mutex<HashMap<String, Weak<Kernel>>>>;

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("isa", &self.isa.triple().to_string())
            .field("has_fma", &self.has_fma)
            .field("vector_isa", &self.vector_isa)
            .field("checked", &self.checked)
            .field("schedule_source", &self.source.as_ref().map(|s| s.describe()))
            .finish()
    }
}

/// The IR and machine code of one kernel, for `convjit ir`.
#[derive(Clone, Debug)]
pub struct Listing {
    /// Cranelift IR, as Cranelift prints it.
    pub ir: String,
    /// The machine code as Cranelift's backend prints it (after register
    /// allocation), when asked for.
    pub asm: Option<String>,
    /// The assembled register tiles the IR calls (a wider ISA's), each
    /// with its name in the IR's listing (`tile0`, …, the user functions
    /// `u1:0`, … in that order) and its instructions.
    pub tiles: Vec<(String, String)>,
}

impl Compiler {
    /// A compiler for this CPU: Cranelift's native detection turns on every
    /// extension the host has (AVX, AVX2, FMA on the target machines).
    ///
    /// Settings (the rules in `codegen::tile`): `opt_level = none`, which keeps instructions
    /// in the order emitted and gave the fastest microkernels; the IR verifier
    /// on in debug builds and tests, off in release builds.
    pub fn host() -> Result<Compiler> {
        let mut flags = settings::builder();
        let set = |flags: &mut settings::Builder, k: &str, v: &str| {
            flags.set(k, v).map_err(|e| Error::Jit(format!("setting {k}={v}: {e}")))
        };
        set(&mut flags, "opt_level", "none")?;
        set(&mut flags, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
        set(&mut flags, "is_pic", "false")?;
        let isa_builder =
            cranelift_native::builder().map_err(|e| Error::Jit(format!("host ISA: {e}")))?;
        let isa: OwnedTargetIsa = isa_builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| Error::Jit(format!("host ISA: {e}")))?;
        let has_fma = crate::target::host_has_fma();
        if !has_fma {
            log::warn!(
                "the host has no FMA: kernels use a multiply and an add per MAC (one more rounding, \
                 slower) instead of f32x4 fma, which Cranelift would lower to library calls"
            );
        }
        Ok(Compiler {
            isa,
            has_fma,
            vector_isa: Isa::host(),
            checked: false,
            source: None,
            shared: SharedKernels::default(),
        })
    }

    /// This compiler, its schedules limited to vector ISAs up to `isa`:
    /// the heuristic chooses among them, the tuner searches them, and a
    /// schedule asking for a wider one is refused. An error when the host
    /// does not have `isa`.
    pub fn with_vector_isa(self, isa: Isa) -> Result<Compiler> {
        if !isa.on_host() {
            return Err(Error::Unsupported(format!(
                "this host has no {isa} (its widest vector ISA is {})",
                Isa::host()
            )));
        }
        Ok(Compiler { vector_isa: isa, shared: SharedKernels::default(), ..self })
    }

    /// The widest vector ISA this compiler's schedules may use.
    pub fn vector_isa(&self) -> Isa {
        self.vector_isa
    }

    /// This compiler, emitting the checked lowering (see [`crate::codegen`]):
    /// every load and store of a kernel's code is tested against the
    /// bounds of its buffer, and an access outside is not made but reported
    /// by [`Kernel::run`] as [`Error::CheckedAccess`]. Several times slower;
    /// for tests and for `convjit run --checked`. The fused
    /// depthwise-separable kernel (`blocks::DscKernel`) has no checked form.
    pub fn checked(self) -> Compiler {
        Compiler { checked: true, shared: SharedKernels::default(), ..self }
    }

    /// Whether this compiler emits the checked lowering.
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// `compiler`, or the host's when none is given.
    pub fn given_or_host(compiler: Option<&Compiler>) -> Result<Cow<'_, Compiler>> {
        match compiler {
            Some(c) => Ok(Cow::Borrowed(c)),
            None => Ok(Cow::Owned(Compiler::host()?)),
        }
    }

    /// This compiler, taking the schedule of every layer it compiles
    /// without one from `source` when it holds one, else from the
    /// heuristic (a tuning cache: [`Compiler::with_tuning_cache`]).
    pub fn with_source(self, source: Arc<dyn ScheduleSource>) -> Compiler {
        Compiler { source: Some(source), ..self }
    }

    /// The schedule `request` asks for `spec`, and where it came from
    /// ([`source::resolve`]: a given schedule with the request's threads,
    /// else the source's, else the heuristic's for the request's threads).
    pub fn resolve(&self, spec: &ValidSpec, request: &Request) -> Result<Resolved> {
        source::resolve(spec, request, self.vector_isa, self.source.as_deref())
    }

    /// The schedule [`Compiler::compile`] uses for `spec` on up to
    /// `threads` threads: the source's when it holds one, else the
    /// heuristic's ([`crate::schedule::choose_threaded`]); see
    /// [`source::lookup`].
    pub fn schedule_for(&self, spec: &ValidSpec, threads: usize) -> Schedule {
        source::lookup(spec, threads, self.vector_isa, self.source.as_deref()).schedule
    }

    /// The schedule source's schedule for `spec` on `threads` threads
    /// (the tuned one), when it holds one this layer can use.
    pub fn tuned_schedule(&self, spec: &ValidSpec, threads: usize) -> Option<Schedule> {
        let tuned = self.source.as_ref().and_then(|source| source.schedule(spec, threads));
        tuned.filter(|s| s.isa <= self.vector_isa)
    }

    /// The ISA kernels are compiled for.
    pub(crate) fn isa(&self) -> &Arc<dyn TargetIsa> {
        &self.isa
    }

    /// Whether kernels use fused multiply-add.
    pub fn has_fma(&self) -> bool {
        self.has_fma
    }

    /// A short description of the target: triple, the vector extensions
    /// Cranelift's code uses, and the widest vector ISA of the tiles.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, f32x4; tiles up to {})",
            self.isa.triple(),
            if self.has_fma { "AVX + FMA" } else { "SSE, no FMA" },
            self.vector_isa
        )
    }

    /// Compiles `spec` for one thread with the tuned schedule, or the
    /// heuristic's ([`Compiler::schedule_for`]).
    pub fn compile(&self, spec: &ValidSpec) -> Result<Kernel> {
        self.compile_with(spec, &self.schedule_for(spec, 1))
    }

    /// Compiles `spec` with a given schedule (checked for legality first).
    pub fn compile_with(&self, spec: &ValidSpec, schedule: &Schedule) -> Result<Kernel> {
        self.compile_epilogue(spec, schedule, Epilogue::Store)
    }

    /// [`Compiler::compile_with`], the kernel's epilogue `epilogue`; a
    /// schedule whose kernel cannot have it ([`Epilogue::Sum`] on Winograd,
    /// or on a transposed layer with output pixels no tap reaches) is
    /// refused.
    pub fn compile_epilogue(
        &self,
        spec: &ValidSpec,
        schedule: &Schedule,
        epilogue: Epilogue,
    ) -> Result<Kernel> {
        self.admits(spec, schedule)?;
        let start = Instant::now();
        let layer = |w| WinogradLayer::new(spec, w, self.vector_isa);
        let winograd = schedule.winograd.map(layer).transpose()?;
        let lowered = schedule.lowered(spec);
        let mut plan = Plan::new(&lowered, schedule);
        plan.compilable()?;
        epilogue.check(spec, schedule)?;
        plan.sum = epilogue == Epilogue::Sum;
        let signature = ConvFn::signature(self.isa.pointer_type(), self.isa.default_call_conv());
        let (code, pointer) = self.define(signature, |func, target, linker| {
            codegen::lower(&lowered, schedule, &plan, target, func, linker)
        })?;
        // SAFETY: the function was compiled with `ConvFn::signature` in the
        // ISA's default calling convention; `code` owns it.
        let function = unsafe { ConvFn::from_code(pointer) };
        let compile_time = start.elapsed();
        log::info!("compiled {spec} with {} in {compile_time:?}", schedule.to_json());
        let checked = self.checked;
        Ok(Kernel::new(
            spec.clone(),
            *schedule,
            plan,
            code,
            function,
            compile_time,
            checked,
            winograd,
        ))
    }

    /// [`Compiler::compile_with`], sharing the code: a kernel of the same
    /// spec and schedule that this compiler (or a clone) made and that is
    /// still held is returned again instead of compiled again, so a
    /// model's identical layers (the loop filter's eight 64→64 convs) are
    /// compiled once. Each holder packs its own weights; the kernel's
    /// scratch buffers serve one run at a time and are made afresh for a
    /// concurrent one. The compiler keeps no kernel alive.
    pub fn compile_shared(&self, spec: &ValidSpec, schedule: &Schedule) -> Result<Arc<Kernel>> {
        self.compile_shared_epilogue(spec, schedule, Epilogue::Store)
    }

    /// [`Compiler::compile_shared`] of [`Compiler::compile_epilogue`]:
    /// kernels share code only with kernels of the same epilogue.
    pub fn compile_shared_epilogue(
        &self,
        spec: &ValidSpec,
        schedule: &Schedule,
        epilogue: Epilogue,
    ) -> Result<Arc<Kernel>> {
        // The spec's fields but its name: layers of other names share.
        let spec_json = serde_json::to_string(&ConvSpec { name: None, ..spec.to_conv_spec() })
            .map_err(|e| Error::Jit(format!("the spec as a key: {e}")))?;
        let key = format!("{spec_json} {} {epilogue:?}", schedule.to_json());
        let lock = || self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(kernel) = lock().get(&key).and_then(Weak::upgrade) {
            log::info!("shared the kernel of {spec} with {}", schedule.to_json());
            return Ok(kernel);
        }
        let kernel = Arc::new(self.compile_epilogue(spec, schedule, epilogue)?);
        let mut shared = lock();
        shared.retain(|_, k| k.strong_count() > 0);
        shared.insert(key, Arc::downgrade(&kernel));
        Ok(kernel)
    }

    /// Checks that this compiler can compile `spec` with `schedule`: the
    /// schedule is legal, and its vector ISA is within this compiler's
    /// (and so the host's).
    fn admits(&self, spec: &ValidSpec, schedule: &Schedule) -> Result<()> {
        schedule.legal(spec)?;
        if schedule.isa > self.vector_isa {
            return Err(Error::InvalidSchedule {
                field: "isa",
                value: schedule.isa.to_string(),
                reason: format!("this compiler's tiles go up to {}", self.vector_isa),
            });
        }
        Ok(())
    }

    /// JIT-compiles one function of `signature` whose body `lower` emits
    /// (linking any assembled code through the [`Linker`] it is given),
    /// returning the code's owner and its address.
    pub(crate) fn define(
        &self,
        signature: ir::Signature,
        lower: impl FnOnce(&mut ir::Function, Target, &mut dyn Linker) -> Result<()>,
    ) -> Result<(Code, *const u8)> {
        self.in_module(|module| {
            let mut ctx = module.make_context();
            ctx.func.signature = signature;
            lower(&mut ctx.func, self.target(), &mut ModuleLinker { module })?;
            let id = module
                .declare_function("conv", Linkage::Export, &ctx.func.signature)
                .map_err(|e| Error::Jit(e.to_string()))?;
            module.define_function(id, &mut ctx).map_err(|e| Error::Jit(format!("{e:?}")))?;
            Ok(id)
        })
    }

    /// Places assembled machine code (a [`wide::signature`] function that
    /// passed [`wide::audit`]) in a JIT module of its own, returning the
    /// code's owner and its address.
    pub(crate) fn define_assembled(&self, code: &[u8]) -> Result<(Code, *const u8)> {
        self.in_module(|module| {
            let jit = |e: cranelift_module::ModuleError| Error::Jit(e.to_string());
            let signature = wide::signature(self.isa.pointer_type());
            let id = module.declare_function("tile", Linkage::Export, &signature).map_err(jit)?;
            module.define_function_bytes(id, 64, code, &[]).map_err(jit)?;
            Ok(id)
        })
    }

    /// A JIT module of its own in which `define` defines the function it
    /// returns, finalized: the code's owner and the function's address.
    /// On an error the module's memory is freed.
    fn in_module(
        &self,
        define: impl FnOnce(&mut JITModule) -> Result<cranelift_module::FuncId>,
    ) -> Result<(Code, *const u8)> {
        let mut module =
            JITModule::new(JITBuilder::with_isa(self.isa.clone(), default_libcall_names()));
        let result = define(&mut module).and_then(|id| {
            module.finalize_definitions().map_err(|e| Error::Jit(e.to_string()))?;
            Ok(module.get_finalized_function(id))
        });
        match result {
            Ok(pointer) => Ok((Code::new(module), pointer)),
            Err(e) => {
                // SAFETY: no pointer into the module's memory escaped.
                unsafe { module.free_memory() };
                Err(e)
            }
        }
    }

    /// What the emitters need to know of the target.
    pub(crate) fn target(&self) -> Target {
        Target {
            frontend: self.isa.frontend_config(),
            vector: crate::target::VECTOR,
            has_fma: self.has_fma,
            checked: self.checked,
        }
    }

    /// The IR (and optionally the machine code) of `spec` under `schedule`.
    pub fn listing(&self, spec: &ValidSpec, schedule: &Schedule, asm: bool) -> Result<Listing> {
        self.admits(spec, schedule)?;
        let lowered = schedule.lowered(spec);
        let plan = Plan::new(&lowered, schedule);
        plan.compilable()?;
        let mut func = ir::Function::new();
        func.signature = ConvFn::signature(self.isa.pointer_type(), self.isa.default_call_conv());
        let mut tiles = ListingLinker { pointer: self.isa.pointer_type(), tiles: Vec::new() };
        codegen::lower(&lowered, schedule, &plan, self.target(), &mut func, &mut tiles)?;
        let ir = func.display().to_string();
        let asm = if asm {
            let mut ctx = Context::for_function(func);
            ctx.set_disasm(true);
            let mut ctrl = Default::default();
            let code = ctx
                .compile(&*self.isa, &mut ctrl)
                .map_err(|e| Error::Jit(format!("{:?}", e.inner)))?;
            code.vcode.clone()
        } else {
            None
        };
        Ok(Listing { ir, asm, tiles: tiles.tiles })
    }
}

/// Links assembled code into the kernel's JIT module.
struct ModuleLinker<'m> {
    module: &'m mut JITModule,
}

impl Linker for ModuleLinker<'_> {
    fn link(&mut self, func: &mut ir::Function, _name: &str, code: &[u8]) -> Result<ir::FuncRef> {
        let jit = |e: cranelift_module::ModuleError| Error::Jit(e.to_string());
        let signature = wide::signature(self.module.isa().pointer_type());
        let id = self.module.declare_anonymous_function(&signature).map_err(jit)?;
        self.module.define_function_bytes(id, 64, code, &[]).map_err(jit)?;
        let callee = self.module.declare_func_in_func(id, func);
        // Called through its absolute address rather than a 32-bit
        // offset, which the JIT would have to fit wherever the two pieces
        // of code land (measured no slower).
        func.dfg.ext_funcs[callee].colocated = false;
        Ok(callee)
    }
}

/// Keeps the assembled code for a listing, named as the IR calls it.
struct ListingLinker {
    pointer: ir::Type,
    tiles: Vec<(String, String)>,
}

impl Linker for ListingLinker {
    fn link(&mut self, func: &mut ir::Function, name: &str, code: &[u8]) -> Result<ir::FuncRef> {
        let user = ir::UserExternalName::new(1, self.tiles.len() as u32);
        let name_ref = func.declare_imported_user_function(user);
        let signature = func.import_signature(wide::signature(self.pointer));
        let callee = func.import_function(ir::ExtFuncData {
            name: ir::ExternalName::user(name_ref),
            signature,
            colocated: false,
            patchable: false,
        });
        self.tiles.push((name.to_string(), wide::listing(code)));
        Ok(callee)
    }
}
