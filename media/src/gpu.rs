//! Headless Vulkan: the one place in the edge agent that talks to the GPU.
//!
//! [`Gpu`] loads `libvulkan.so.1` at run time (no window, no surface, no extension), picks the
//! best physical device, opens one compute queue on it and builds the compute pipelines of the
//! frame path: `shaders/render.comp`, which draws the scene and writes it as NV12 in one pass,
//! one pipeline per kind of tile, and their variants that also store the RGBA picture (for
//! tests).
//! It is cheap to clone and shared by every session on the machine; submissions to the one
//! queue are serialised by a mutex, everything else a session uses is its own.
//!
//! A [`RenderTarget`](crate::render::RenderTarget) owns the per-session half, built here as
//! `Target`: buffers (scene uniform, tile jobs, RGBA, a ring of NV12 pictures), a descriptor set
//! and a render command buffer per NV12 slot, recorded once and replayed every frame, a fence
//! and a timestamp query pool. No Vulkan type leaves this module, and no other module of the
//! crate needs `unsafe`.
//!
//! The NV12 ring: the GPU draws each picture into host-visible memory, which the encoder reads
//! in place when the memory is host-cached (an [`Nv12Frame`] lends one slot until it is
//! dropped), so no frame is copied on its way from the render to x264. Slot 0 stays with the
//! target for the copying [`RenderTarget::render_nv12`](crate::render::RenderTarget::render_nv12).
//!
//! Destroy order: dropping the last [`Gpu`] clone (every `Target` holds one) waits for the
//! device to go idle, then destroys in reverse creation order: pipelines, pipeline layout,
//! descriptor set layout, device, instance; the loader library goes last. A `Target` waits for
//! its own submission (if one is still pending), then destroys its objects in reverse creation
//! order before releasing its [`Gpu`] clone.
//!
//! Device choice: discrete > integrated > virtual > CPU, NVIDIA (vendor 0x10de) first among
//! equals, enumeration order after that. `EDGEPLAY_VULKAN_DEVICE=<name substring>` (or
//! [`GpuOptions::device`]) overrides the choice.
#![allow(
    unsafe_code,
    reason = "Vulkan through ash is unsafe FFI; this module is the crate's one home for it"
)]

use std::ffi::CStr;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ash::vk;
use ash::vk::PipelineStageFlags as Stage;
use tracing::{debug, info};

/// SPIR-V of `shaders/render.comp`, compiled by build.rs.
static RENDER_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/render.spv"));
/// Bytes of one `VkDispatchIndirectCommand` slot at the head of the jobs buffer (a `uvec4`).
const DISPATCH_SLOT: u64 = 16;
/// Kinds of tile, one render pipeline each (render.comp's `KIND`; render.rs sorts the tiles).
pub(crate) const KINDS: usize = 4;
/// Slot of the jobs buffer's head with every plain tile (the other slots are one per kind).
pub(crate) const ALL_PLAIN_SLOT: u64 = KINDS as u64;
/// NV12 pictures per target: slot 0 is read back by copy, the others are lent out in place
/// ([`Nv12Frame`]): up to the encoder's queue of two pictures, the one it is encoding and the
/// one being drawn. When all are out, a frame falls back to the copy.
pub(crate) const NV12_SLOTS: usize = 5;
/// Slots start at multiples of this (a page: above any minStorageBufferOffsetAlignment).
const SLOT_ALIGN: usize = 4096;
/// Longest wait for one submission: far above any frame time, short enough that a hung
/// device turns into an error instead of a stuck session.
const FENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// The descriptor set of render.comp, binding by binding (its `layout(binding = N)`): the
/// scene uniform, then the RGBA, NV12 and tile jobs storage buffers.
const BINDINGS: [vk::DescriptorType; 4] = [
    vk::DescriptorType::UNIFORM_BUFFER,
    vk::DescriptorType::STORAGE_BUFFER,
    vk::DescriptorType::STORAGE_BUFFER,
    vk::DescriptorType::STORAGE_BUFFER,
];
/// NVIDIA's PCI vendor id, preferred among devices of the same type.
const VENDOR_NVIDIA: u32 = 0x10de;
/// Environment variable that picks a device by a substring of its name.
pub const DEVICE_ENV: &str = "EDGEPLAY_VULKAN_DEVICE";

/// What went wrong on the GPU side, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The Vulkan loader library could not be loaded.
    #[error(
        "Vulkan loader libvulkan.so.1 not found: run `cargo xtask setup` (installs mesa-vulkan-drivers and libvulkan1) ({detail})"
    )]
    NoLoader {
        /// What the dynamic loader said.
        detail: String,
    },
    /// No physical device offers a compute queue (or Vulkan 1.1).
    #[error(
        "no Vulkan device with a compute queue: install mesa-vulkan-drivers (lavapipe) or a GPU driver"
    )]
    NoDevice,
    /// A device was asked for by name and none matches.
    #[error(
        "no Vulkan device name contains {wanted:?} (from {DEVICE_ENV} or the options); devices with a compute queue: {available}"
    )]
    NoMatchingDevice {
        /// The substring asked for.
        wanted: String,
        /// Names of the usable devices, comma separated.
        available: String,
    },
    /// The device was lost (driver reset, GPU fell off the bus): drop the [`Gpu`] and open a
    /// new one.
    #[error("the Vulkan device was lost during {what}: reopen the GPU")]
    DeviceLost {
        /// The operation that found out.
        what: &'static str,
    },
    /// A submission did not finish in time.
    #[error(
        "the GPU did not finish {what} within {FENCE_TIMEOUT:?}: the device is hung or overloaded"
    )]
    Timeout {
        /// The operation that waited.
        what: &'static str,
    },
    /// A Vulkan call failed.
    #[error("Vulkan {what} failed: {result}")]
    Vk {
        /// The call or step.
        what: &'static str,
        /// The `VkResult`, as Vulkan names it.
        result: String,
    },
    /// The device has no memory type the buffer can live in.
    #[error("the Vulkan device has no suitable memory type for the {what} buffer")]
    NoMemoryType {
        /// Which buffer.
        what: &'static str,
    },
    /// The render target size is not supported.
    #[error(
        "unsupported resolution {width}x{height}: use 1280x720 or 1920x1080 (tests may use any width multiple of 16 and height multiple of 8, at least 64x64)"
    )]
    UnsupportedResolution {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
    },
    /// A caller's buffer has the wrong length.
    #[error("the {what} buffer holds {actual} bytes, it must hold exactly {expected}")]
    BufferSize {
        /// Which buffer.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        actual: usize,
    },
}

impl GpuError {
    fn vk(what: &'static str, result: vk::Result) -> Self {
        match result {
            vk::Result::ERROR_DEVICE_LOST => Self::DeviceLost { what },
            vk::Result::TIMEOUT => Self::Timeout { what },
            other => Self::Vk {
                what,
                result: format!("{other:?}"),
            },
        }
    }
}
/// `map_err` helper: tags a `vk::Result` with the step that failed.
fn vkr(what: &'static str) -> impl FnOnce(vk::Result) -> GpuError {
    move |result| GpuError::vk(what, result)
}

/// Records `cb` whole: begins it, lets `commands` record into it, ends it.
///
/// # Safety
/// `cb` is a command buffer of `device`, not pending on any queue; what `commands` records is
/// valid and uses only objects that outlive the command buffer.
unsafe fn record_commands(
    device: &ash::Device,
    cb: vk::CommandBuffer,
    commands: impl FnOnce(),
) -> Result<(), GpuError> {
    // SAFETY: per the caller's contract.
    unsafe {
        device
            .begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default())
            .map_err(vkr("vkBeginCommandBuffer"))?;
        commands();
        device
            .end_command_buffer(cb)
            .map_err(vkr("vkEndCommandBuffer"))
    }
}

/// One side of a barrier: a pipeline stage and the accesses of that stage it orders.
type Access = (Stage, vk::AccessFlags);
/// The compute shader's writes (NV12, and RGBA in the test variant).
const SHADER_WRITE: Access = (Stage::COMPUTE_SHADER, vk::AccessFlags::SHADER_WRITE);
/// The copy's reads and writes (the RGBA readback).
const COPY_READ: Access = (Stage::TRANSFER, vk::AccessFlags::TRANSFER_READ);
const COPY_WRITE: Access = (Stage::TRANSFER, vk::AccessFlags::TRANSFER_WRITE);
/// The CPU reading mapped memory after the fence.
const HOST_READ: Access = (Stage::HOST, vk::AccessFlags::HOST_READ);

/// Records a pipeline barrier over all of `buffer` (on one queue family), from the `src` stage
/// and accesses to the `dst` ones.
///
/// # Safety
/// `cb` is a command buffer of `device` in the recording state; the buffer is live.
unsafe fn cmd_buffer_barrier(
    device: &ash::Device,
    cb: vk::CommandBuffer,
    buffer: vk::Buffer,
    (src_stage, src): Access,
    (dst_stage, dst): Access,
) {
    let barrier = [vk::BufferMemoryBarrier::default()
        .src_access_mask(src)
        .dst_access_mask(dst)
        .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .buffer(buffer)
        .size(vk::WHOLE_SIZE)];
    // SAFETY: per the caller's contract.
    unsafe {
        device.cmd_pipeline_barrier(
            cb,
            src_stage,
            dst_stage,
            vk::DependencyFlags::empty(),
            &[],
            &barrier,
            &[],
        );
    }
}

/// The physical device in use, for logs, `/metrics` labels and the broker's registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name, e.g. `NVIDIA H100 80GB HBM3` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// PCI vendor id (0x10de NVIDIA) or Khronos vendor id (0x10005 Mesa).
    pub vendor_id: u32,
    /// `discrete`, `integrated`, `virtual`, `cpu` or `other`.
    pub device_type: String,
    /// Vulkan version the device supports, `major.minor.patch`.
    pub api_version: String,
    /// Driver name and version, e.g. `llvmpipe Mesa 22.3.6 (LLVM 15.0.6)`.
    pub driver: String,
}

/// How to open the GPU.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Use the first device whose name contains this (case-insensitive) instead of the best.
    pub device: Option<String>,
    /// Time the render pass with timestamp queries when the queue has them; `false` (or no
    /// support) times it as the submission waited on a fence (which adds the submit and wake-up
    /// to the figure).
    pub timestamp_queries: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            device: None,
            timestamp_queries: true,
        }
    }
}

impl GpuOptions {
    /// Defaults, with the device override from [`DEVICE_ENV`] when set and not empty.
    #[must_use]
    pub fn from_env() -> Self {
        Self {
            device: std::env::var(DEVICE_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty()),
            ..Self::default()
        }
    }
}

/// The GPU, shared by every session on the machine. Cheap to clone.
#[derive(Clone)]
pub struct Gpu {
    shared: Arc<Shared>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("device", &self.shared.info.name)
            .field("queue_family", &self.shared.queue_family)
            .field("timestamps", &self.shared.timestamps.is_some())
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Opens the best device, or the one [`DEVICE_ENV`] names.
    ///
    /// # Errors
    /// [`GpuError::NoLoader`], [`GpuError::NoDevice`], [`GpuError::NoMatchingDevice`], or a
    /// Vulkan call that failed.
    pub fn new() -> Result<Self, GpuError> {
        Self::with_options(&GpuOptions::from_env())
    }

    /// Opens a device as `options` say.
    ///
    /// # Errors
    /// As [`Gpu::new`].
    pub fn with_options(options: &GpuOptions) -> Result<Self, GpuError> {
        Shared::open(options).map(|shared| Self {
            shared: Arc::new(shared),
        })
    }

    /// The device in use.
    #[must_use]
    pub fn info(&self) -> &DeviceInfo {
        &self.shared.info
    }

    /// Whether pass times come from GPU timestamps (else from fence waits on the CPU).
    #[must_use]
    pub fn uses_timestamps(&self) -> bool {
        self.shared.timestamps.is_some()
    }
}

/// Timestamp support of the chosen queue.
#[derive(Clone, Copy, Debug)]
struct Timestamps {
    /// Nanoseconds per tick.
    period_ns: f64,
    /// Mask of the valid bits of a timestamp.
    mask: u64,
}

/// Everything shared by the sessions. Fields are destroyed by [`Drop`] in reverse creation
/// order; Vulkan accepts null handles there, so a half-built `Shared` cleans up too.
struct Shared {
    info: DeviceInfo,
    queue_family: u32,
    memory: vk::PhysicalDeviceMemoryProperties,
    timestamps: Option<Timestamps>,
    /// The one compute queue; `vkQueueSubmit` needs it externally synchronised.
    queue: Mutex<vk::Queue>,
    set_layout: vk::DescriptorSetLayout,
    pipeline_layout: vk::PipelineLayout,
    /// render.comp with `KIND` = 0..4 and `WRITE_RGBA` = 0: the production pass, NV12 only.
    render_pipelines: [vk::Pipeline; KINDS],
    /// The same with `WRITE_RGBA` = 1: NV12 and the RGBA picture, for `read_rgba`.
    rgba_pipelines: [vk::Pipeline; KINDS],
    device: ash::Device,
    instance: ash::Instance,
    /// Keeps libvulkan loaded while the instance lives.
    _entry: ash::Entry,
}

/// A usable physical device.
struct Candidate {
    physical: vk::PhysicalDevice,
    properties: vk::PhysicalDeviceProperties,
    name: String,
    family: u32,
    timestamp_bits: u32,
}

impl Candidate {
    /// Higher is better: type first, NVIDIA among equals.
    fn rank(&self) -> (u8, bool) {
        let kind = match self.properties.device_type {
            vk::PhysicalDeviceType::DISCRETE_GPU => 4,
            vk::PhysicalDeviceType::INTEGRATED_GPU => 3,
            vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
            vk::PhysicalDeviceType::CPU => 1,
            _ => 0,
        };
        (kind, self.properties.vendor_id == VENDOR_NVIDIA)
    }
}

fn type_name(kind: vk::PhysicalDeviceType) -> &'static str {
    match kind {
        vk::PhysicalDeviceType::DISCRETE_GPU => "discrete",
        vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated",
        vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual",
        vk::PhysicalDeviceType::CPU => "cpu",
        _ => "other",
    }
}

fn version_string(v: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(v),
        vk::api_version_minor(v),
        vk::api_version_patch(v)
    )
}

fn c_string(s: Result<&CStr, std::ffi::FromBytesUntilNulError>) -> String {
    s.map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Shared {
    fn open(options: &GpuOptions) -> Result<Self, GpuError> {
        // SAFETY: loading libvulkan runs its initialisers; the Vulkan loader is built to be
        // loaded this way, and the entry is kept alive in `Shared` as long as anything uses it.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| GpuError::NoLoader {
            detail: e.to_string(),
        })?;
        // SAFETY: `entry` is a loaded Vulkan entry point.
        let loader_version = unsafe { entry.try_enumerate_instance_version() }
            .map_err(vkr("vkEnumerateInstanceVersion"))?
            .unwrap_or(vk::API_VERSION_1_0);
        if loader_version < vk::API_VERSION_1_1 {
            return Err(GpuError::NoDevice);
        }
        let api_version = loader_version.min(vk::API_VERSION_1_3);
        let app = vk::ApplicationInfo::default()
            .application_name(c"edgeplay-edge")
            .engine_name(c"edgeplay")
            .api_version(api_version);
        let create = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: the create info and what it points to live across the call; no layers or
        // extensions are asked for.
        let instance =
            unsafe { entry.create_instance(&create, None) }.map_err(vkr("vkCreateInstance"))?;

        match Self::open_device(&instance, api_version, options) {
            Ok((device, candidate, info, timestamps)) => {
                // SAFETY: the physical device comes from this instance.
                let memory =
                    unsafe { instance.get_physical_device_memory_properties(candidate.physical) };
                // SAFETY: the device was created with one queue in `candidate.family`.
                let queue = unsafe { device.get_device_queue(candidate.family, 0) };
                let mut shared = Self {
                    info,
                    queue_family: candidate.family,
                    memory,
                    timestamps,
                    queue: Mutex::new(queue),
                    set_layout: vk::DescriptorSetLayout::null(),
                    pipeline_layout: vk::PipelineLayout::null(),
                    render_pipelines: [vk::Pipeline::null(); KINDS],
                    rgba_pipelines: [vk::Pipeline::null(); KINDS],
                    device,
                    instance,
                    _entry: entry,
                };
                // On error `shared` drops here and destroys what was built.
                shared.build_pipelines()?;
                Ok(shared)
            }
            Err(e) => {
                // SAFETY: nothing created from the instance is alive (open_device cleans up
                // after itself), and the instance is not used again.
                unsafe { instance.destroy_instance(None) };
                Err(e)
            }
        }
    }

    /// Picks the physical device and creates the logical device with one compute queue.
    fn open_device(
        instance: &ash::Instance,
        instance_version: u32,
        options: &GpuOptions,
    ) -> Result<(ash::Device, Candidate, DeviceInfo, Option<Timestamps>), GpuError> {
        // SAFETY: `instance` is a live instance.
        let physicals = unsafe { instance.enumerate_physical_devices() }
            .map_err(vkr("vkEnumeratePhysicalDevices"))?;
        let mut candidates = Vec::new();
        for physical in physicals {
            // SAFETY: `physical` was enumerated from `instance`.
            let properties = unsafe { instance.get_physical_device_properties(physical) };
            let name = c_string(properties.device_name_as_c_str());
            if properties.api_version < vk::API_VERSION_1_1 {
                debug!(device = %name, "skipping Vulkan device: older than Vulkan 1.1");
                continue;
            }
            // SAFETY: as above.
            let families =
                unsafe { instance.get_physical_device_queue_family_properties(physical) };
            // A compute family, preferring one whose queue has timestamps.
            let family = families
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    f.queue_flags.contains(vk::QueueFlags::COMPUTE) && f.queue_count > 0
                })
                .max_by_key(|(i, f)| (f.timestamp_valid_bits > 0, std::cmp::Reverse(*i)));
            let Some((family, family_props)) = family else {
                debug!(device = %name, "skipping Vulkan device: no compute queue");
                continue;
            };
            candidates.push(Candidate {
                physical,
                properties,
                name,
                family: u32::try_from(family).map_err(|_| GpuError::NoDevice)?,
                timestamp_bits: family_props.timestamp_valid_bits,
            });
        }
        if candidates.is_empty() {
            return Err(GpuError::NoDevice);
        }

        let (index, reason) = if let Some(wanted) = &options.device {
            let needle = wanted.to_lowercase();
            let Some(index) = candidates
                .iter()
                .position(|c| c.name.to_lowercase().contains(&needle))
            else {
                let available = candidates
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(GpuError::NoMatchingDevice {
                    wanted: wanted.clone(),
                    available,
                });
            };
            (index, format!("its name contains {wanted:?}"))
        } else {
            let mut best = 0;
            for (i, c) in candidates.iter().enumerate() {
                if c.rank() > candidates[best].rank() {
                    best = i;
                }
            }
            let c = &candidates[best];
            let nvidia = if c.rank().1 { ", NVIDIA" } else { "" };
            (
                best,
                format!(
                    "best of {} usable device(s): {}{nvidia}",
                    candidates.len(),
                    type_name(c.properties.device_type)
                ),
            )
        };
        let candidate = candidates.swap_remove(index);

        let effective = instance_version.min(candidate.properties.api_version);
        let driver = if effective >= vk::API_VERSION_1_2 {
            let mut driver = vk::PhysicalDeviceDriverProperties::default();
            let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver);
            // SAFETY: Vulkan 1.2 is supported by both instance and device, so the driver
            // properties struct is a valid extension of the query.
            unsafe { instance.get_physical_device_properties2(candidate.physical, &mut props2) };
            format!(
                "{} {}",
                c_string(driver.driver_name_as_c_str()),
                c_string(driver.driver_info_as_c_str())
            )
        } else {
            format!("driver version {:#x}", candidate.properties.driver_version)
        };
        let info = DeviceInfo {
            name: candidate.name.clone(),
            vendor_id: candidate.properties.vendor_id,
            device_type: type_name(candidate.properties.device_type).to_owned(),
            api_version: version_string(candidate.properties.api_version),
            driver,
        };
        let period = f64::from(candidate.properties.limits.timestamp_period);
        let timestamps = (options.timestamp_queries
            && candidate.timestamp_bits > 0
            && period > 0.0)
            .then(|| Timestamps {
                period_ns: period,
                mask: if candidate.timestamp_bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << candidate.timestamp_bits) - 1
                },
            });
        info!(
            device = %info.name,
            vendor_id = format_args!("{:#06x}", info.vendor_id),
            device_type = %info.device_type,
            api_version = %info.api_version,
            driver = %info.driver,
            queue_family = candidate.family,
            timestamps = timestamps.is_some(),
            reason = %reason,
            "picked Vulkan device"
        );

        let priorities = [1.0_f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(candidate.family)
            .queue_priorities(&priorities)];
        let create = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
        // SAFETY: the physical device belongs to `instance`; the create info asks for one
        // queue of a family that exists, no features and no extensions.
        let device = unsafe { instance.create_device(candidate.physical, &create, None) }
            .map_err(vkr("vkCreateDevice"))?;
        Ok((device, candidate, info, timestamps))
    }

    /// Descriptor set layout, pipeline layout and the two variants of the render pipeline.
    fn build_pipelines(&mut self) -> Result<(), GpuError> {
        let bindings: Vec<_> = (0..).zip(BINDINGS).map(|(i, t)| binding(i, t)).collect();
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: `self.device` is live; the info lives across the call.
        self.set_layout = unsafe { self.device.create_descriptor_set_layout(&info, None) }
            .map_err(vkr("vkCreateDescriptorSetLayout"))?;
        let layouts = [self.set_layout];
        let info = vk::PipelineLayoutCreateInfo::default().set_layouts(&layouts);
        // SAFETY: as above; the set layout was just created on this device.
        self.pipeline_layout = unsafe { self.device.create_pipeline_layout(&info, None) }
            .map_err(vkr("vkCreatePipelineLayout"))?;
        let specs: Vec<[i32; 2]> = [0, 1]
            .into_iter()
            .flat_map(|rgba| (0..).take(KINDS).map(move |kind| [kind, rgba]))
            .collect();
        let made = self.pipelines(RENDER_SPV, "render.comp", &specs)?;
        self.render_pipelines.copy_from_slice(&made[..KINDS]);
        self.rgba_pipelines.copy_from_slice(&made[KINDS..]);
        Ok(())
    }

    /// One pipeline per entry of `specs`, each with the shader's specialization constants 0
    /// and 1 set to it.
    fn pipelines(
        &self,
        spv: &[u8],
        what: &'static str,
        specs: &[[i32; 2]],
    ) -> Result<Vec<vk::Pipeline>, GpuError> {
        let code =
            ash::util::read_spv(&mut std::io::Cursor::new(spv)).map_err(|e| GpuError::Vk {
                what,
                result: format!("bad SPIR-V from build.rs: {e}"),
            })?;
        let info = vk::ShaderModuleCreateInfo::default().code(&code);
        // SAFETY: `code` is SPIR-V compiled by glslangValidator for Vulkan 1.1.
        let module = unsafe { self.device.create_shader_module(&info, None) }
            .map_err(vkr("vkCreateShaderModule"))?;
        let entries = [0, 1].map(|id| {
            vk::SpecializationMapEntry::default()
                .constant_id(id)
                .offset(4 * id)
                .size(4)
        });
        let data: Vec<[u8; 8]> = specs
            .iter()
            .map(|[a, b]| {
                let mut d = [0u8; 8];
                d[..4].copy_from_slice(&a.to_ne_bytes());
                d[4..].copy_from_slice(&b.to_ne_bytes());
                d
            })
            .collect();
        let spec_infos: Vec<_> = data
            .iter()
            .map(|d| {
                vk::SpecializationInfo::default()
                    .map_entries(&entries)
                    .data(d)
            })
            .collect();
        let infos: Vec<_> = spec_infos
            .iter()
            .map(|spec| {
                let stage = vk::PipelineShaderStageCreateInfo::default()
                    .stage(vk::ShaderStageFlags::COMPUTE)
                    .module(module)
                    .name(c"main")
                    .specialization_info(spec);
                vk::ComputePipelineCreateInfo::default()
                    .stage(stage)
                    .layout(self.pipeline_layout)
            })
            .collect();
        // SAFETY: module and layout are live objects of this device; the shader's bindings
        // match the set layout (see build_pipelines and the shaders).
        let created = unsafe {
            self.device
                .create_compute_pipelines(vk::PipelineCache::null(), &infos, None)
        };
        // SAFETY: a shader module may be destroyed once pipelines using it are created.
        unsafe { self.device.destroy_shader_module(module, None) };
        match created {
            Ok(pipelines) => Ok(pipelines),
            Err((pipelines, result)) => {
                for p in pipelines {
                    // SAFETY: failed creation leaves null or unused pipelines only.
                    unsafe { self.device.destroy_pipeline(p, None) };
                }
                Err(GpuError::vk("vkCreateComputePipelines", result))
            }
        }
    }

    /// Index of a memory type allowed by `type_bits` with `required` flags, preferring one
    /// that also has `preferred`.
    fn memory_type(
        &self,
        type_bits: u32,
        required: vk::MemoryPropertyFlags,
        preferred: vk::MemoryPropertyFlags,
    ) -> Option<u32> {
        let count = self
            .memory
            .memory_type_count
            .min(vk::MAX_MEMORY_TYPES as u32);
        let find = |flags: vk::MemoryPropertyFlags| {
            (0..count).find(|&i| {
                type_bits & (1 << i) != 0
                    && self.memory.memory_types[i as usize]
                        .property_flags
                        .contains(flags)
            })
        };
        find(required | preferred).or_else(|| find(required))
    }

    /// Submits command buffers on the shared queue.
    fn submit(&self, buffers: &[vk::CommandBuffer], fence: vk::Fence) -> Result<(), GpuError> {
        let submits = [vk::SubmitInfo::default().command_buffers(buffers)];
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: the queue is externally synchronised by the mutex held here; the command
        // buffers are fully recorded and not pending (their previous use was waited on); the
        // fence is unsignalled.
        unsafe { self.device.queue_submit(*queue, &submits, fence) }.map_err(vkr("vkQueueSubmit"))
    }
}

fn binding(index: u32, kind: vk::DescriptorType) -> vk::DescriptorSetLayoutBinding<'static> {
    vk::DescriptorSetLayoutBinding::default()
        .binding(index)
        .descriptor_type(kind)
        .descriptor_count(1)
        .stage_flags(vk::ShaderStageFlags::COMPUTE)
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: this is the last reference (every Target holds an Arc), so no other thread
        // uses the queue or any object below; after the idle wait nothing is pending. Objects
        // go in reverse creation order; null handles (a half-built Shared) are no-ops.
        unsafe {
            // Nothing useful to do on failure (device lost): destroy anyway.
            let _ = self.device.device_wait_idle();
            for &pipeline in self
                .rgba_pipelines
                .iter()
                .chain(&self.render_pipelines)
                .rev()
            {
                self.device.destroy_pipeline(pipeline, None);
            }
            self.device
                .destroy_pipeline_layout(self.pipeline_layout, None);
            self.device
                .destroy_descriptor_set_layout(self.set_layout, None);
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

/// A buffer with its own memory, mapped when host visible.
struct Buffer {
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    size: usize,
    mapped: Option<Mapped>,
    /// The property flags of the memory type it was bound to.
    flags: vk::MemoryPropertyFlags,
}

impl Buffer {
    const NULL: Self = Self {
        buffer: vk::Buffer::null(),
        memory: vk::DeviceMemory::null(),
        size: 0,
        mapped: None,
        flags: vk::MemoryPropertyFlags::empty(),
    };

    /// # Safety
    /// The device must be live and this buffer's memory not in use by the GPU.
    unsafe fn destroy(&mut self, device: &ash::Device) {
        self.mapped = None;
        // SAFETY: per the caller's contract; freeing the memory also unmaps it; null handles
        // are no-ops.
        unsafe {
            device.destroy_buffer(self.buffer, None);
            device.free_memory(self.memory, None);
        }
        self.buffer = vk::Buffer::null();
        self.memory = vk::DeviceMemory::null();
    }
}

/// A persistent host mapping of a whole `HOST_COHERENT` allocation.
struct Mapped {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by one Buffer; access goes through &self / &mut self
// of its owner, so the usual borrow rules keep it race free across threads.
unsafe impl Send for Mapped {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` bytes for as long as the Buffer lives; callers only use it
        // while the GPU is not writing it (Target::ensure_idle).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn words_mut(&mut self) -> &mut [u32] {
        // SAFETY: as `bytes`; the pointer is 4-aligned (checked at mapping), the length is
        // rounded down to whole words, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u32>(), self.len / 4) }
    }
}

/// The NV12 pictures of one target: [`NV12_SLOTS`] frames in one host-visible buffer, and
/// which of them are lent out. Shared by the target and the [`Nv12Frame`]s it lends, so the
/// memory lives until the last of them is gone.
struct Nv12Ring {
    buffer: Buffer,
    /// Bytes from one slot's start to the next's.
    stride: usize,
    /// Bytes of one picture.
    frame_len: usize,
    /// Bit `i` set: slot `i` is lent out (slot 0 never is).
    lent: AtomicU32,
    gpu: Arc<Shared>,
}

const _: () = assert!(NV12_SLOTS <= 32);

impl Nv12Ring {
    /// The bytes of slot `slot`.
    ///
    /// # Safety
    /// The GPU is not writing the slot: its last render was waited on, and no later one into
    /// it was submitted.
    unsafe fn slot(&self, slot: usize) -> &[u8] {
        let all = self.buffer.mapped.as_ref().map_or(&[][..], Mapped::bytes);
        all.get(slot * self.stride..slot * self.stride + self.frame_len)
            .unwrap_or(&[])
    }

    /// Marks a free slot other than 0 as lent; `None` when every one is out.
    fn take(&self) -> Option<usize> {
        let mut lent = self.lent.load(Ordering::Acquire);
        loop {
            let slot = (1..NV12_SLOTS).find(|&i| lent & (1 << i) == 0)?;
            match self.lent.compare_exchange_weak(
                lent,
                lent | (1 << slot),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(slot),
                Err(now) => lent = now,
            }
        }
    }
}

impl Drop for Nv12Ring {
    fn drop(&mut self) {
        // SAFETY: the last reference: the target waited for its submissions before dropping
        // its own, and frames only read.
        unsafe { self.buffer.destroy(&self.gpu.device) };
    }
}

/// One NV12 picture drawn by a [`RenderTarget`](crate::render::RenderTarget), read in place in
/// the target's host-visible memory (Y plane, then the interleaved UV plane, both with a stride
/// of the width). Its slot is lent out until this is dropped; the target draws into other
/// slots meanwhile. `Send` and `'static`, so a GStreamer buffer can own it.
pub struct Nv12Frame {
    ring: Arc<Nv12Ring>,
    slot: usize,
}

impl fmt::Debug for Nv12Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nv12Frame")
            .field("slot", &self.slot)
            .field("len", &self.ring.frame_len)
            .finish()
    }
}

impl Nv12Frame {
    /// The target's NV12 slot this frame holds.
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }
}

impl AsRef<[u8]> for Nv12Frame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the slot is lent to this frame, so the target renders nothing into it; the
        // frame is handed out only after its render was waited on (Target::execute).
        unsafe { self.ring.slot(self.slot) }
    }
}

impl Drop for Nv12Frame {
    fn drop(&mut self) {
        self.ring
            .lent
            .fetch_and(!(1 << self.slot), Ordering::AcqRel);
    }
}

/// Per-session GPU objects of a render target: the frame path's buffers, descriptor sets,
/// pre-recorded command buffers, fence and timestamp queries.
pub(crate) struct Target {
    width: u32,
    height: u32,
    uniform: Buffer,
    /// The tiles of each kind and their indirect dispatch commands, written per frame.
    jobs: Buffer,
    /// Written only by [`Target::read_rgba`]'s pass.
    rgba: Buffer,
    nv12: Arc<Nv12Ring>,
    /// Host copy of `rgba` for [`Target::read_rgba`], made on first use.
    staging: Buffer,
    descriptor_pool: vk::DescriptorPool,
    /// Per NV12 slot: the descriptor set that binds it, and the render pass drawing into it.
    sets: [vk::DescriptorSet; NV12_SLOTS],
    command_pool: vk::CommandPool,
    render_commands: [vk::CommandBuffer; NV12_SLOTS],
    /// The RGBA variant of the render pass and the copy of its picture into `staging`.
    copy_commands: vk::CommandBuffer,
    fence: vk::Fence,
    queries: vk::QueryPool,
    /// A submission may still run (only after a failed wait).
    in_flight: bool,
    gpu: Arc<Shared>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Builds the objects for a `width` x `height` frame (the caller checked the size: width a
    /// multiple of 16, height of 8) with a scene uniform of `uniform_size` bytes and a jobs
    /// buffer of `jobs_size` bytes (both multiples of 4).
    pub(crate) fn new(
        gpu: &Gpu,
        width: u32,
        height: u32,
        uniform_size: usize,
        jobs_size: usize,
    ) -> Result<Self, GpuError> {
        let pixels = width as usize * height as usize;
        let mut target = Self {
            width,
            height,
            uniform: Buffer::NULL,
            jobs: Buffer::NULL,
            rgba: Buffer::NULL,
            nv12: Arc::new(Nv12Ring {
                buffer: Buffer::NULL,
                stride: 0,
                frame_len: 0,
                lent: AtomicU32::new(0),
                gpu: Arc::clone(&gpu.shared),
            }),
            staging: Buffer::NULL,
            descriptor_pool: vk::DescriptorPool::null(),
            sets: [vk::DescriptorSet::null(); NV12_SLOTS],
            command_pool: vk::CommandPool::null(),
            render_commands: [vk::CommandBuffer::null(); NV12_SLOTS],
            copy_commands: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            queries: vk::QueryPool::null(),
            in_flight: false,
            gpu: Arc::clone(&gpu.shared),
        };
        // From here on an error drops `target`, which destroys what was built.
        let host = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        target.uniform = target.buffer(
            "scene uniform",
            uniform_size,
            vk::BufferUsageFlags::UNIFORM_BUFFER,
            host,
            vk::MemoryPropertyFlags::empty(),
        )?;
        target.jobs = target.buffer(
            "render jobs",
            jobs_size,
            vk::BufferUsageFlags::STORAGE_BUFFER | vk::BufferUsageFlags::INDIRECT_BUFFER,
            host,
            vk::MemoryPropertyFlags::empty(),
        )?;
        target.rgba = target.buffer(
            "RGBA render target",
            pixels * 4,
            vk::BufferUsageFlags::STORAGE_BUFFER | vk::BufferUsageFlags::TRANSFER_SRC,
            vk::MemoryPropertyFlags::DEVICE_LOCAL,
            vk::MemoryPropertyFlags::empty(),
        )?;
        let frame_len = pixels * 3 / 2;
        let stride = frame_len.next_multiple_of(SLOT_ALIGN);
        let buffer = target.buffer(
            "NV12 pictures",
            stride * NV12_SLOTS,
            vk::BufferUsageFlags::STORAGE_BUFFER,
            host,
            // CPU reads of uncached (write-combined) memory are many times slower.
            vk::MemoryPropertyFlags::HOST_CACHED,
        )?;
        target.nv12 = Arc::new(Nv12Ring {
            buffer,
            stride,
            frame_len,
            lent: AtomicU32::new(0),
            gpu: Arc::clone(&gpu.shared),
        });
        target.descriptors()?;
        target.record()?;
        let info = vk::FenceCreateInfo::default();
        // SAFETY: live device.
        target.fence =
            unsafe { target.device().create_fence(&info, None) }.map_err(vkr("vkCreateFence"))?;
        Ok(target)
    }

    fn device(&self) -> &ash::Device {
        &self.gpu.device
    }

    fn buffer(
        &self,
        what: &'static str,
        size: usize,
        usage: vk::BufferUsageFlags,
        required: vk::MemoryPropertyFlags,
        preferred: vk::MemoryPropertyFlags,
    ) -> Result<Buffer, GpuError> {
        let device = self.device();
        let info = vk::BufferCreateInfo::default()
            .size(size as vk::DeviceSize)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        let mut out = Buffer::NULL;
        out.size = size;
        // SAFETY: live device, valid create info.
        out.buffer = unsafe { device.create_buffer(&info, None) }.map_err(vkr("vkCreateBuffer"))?;
        // From here on, errors must destroy `out`.
        let result = (|| {
            // SAFETY: the buffer was just created on this device.
            let needs = unsafe { device.get_buffer_memory_requirements(out.buffer) };
            let memory_type = self
                .gpu
                .memory_type(needs.memory_type_bits, required, preferred)
                .ok_or(GpuError::NoMemoryType { what })?;
            out.flags = self.gpu.memory.memory_types[memory_type as usize].property_flags;
            let alloc = vk::MemoryAllocateInfo::default()
                .allocation_size(needs.size)
                .memory_type_index(memory_type);
            // SAFETY: the memory type index comes from this device's memory properties.
            out.memory =
                unsafe { device.allocate_memory(&alloc, None) }.map_err(vkr("vkAllocateMemory"))?;
            // SAFETY: fresh buffer and memory of this device; the memory is large enough and of
            // a type the buffer accepts; offset 0 meets any alignment.
            unsafe { device.bind_buffer_memory(out.buffer, out.memory, 0) }
                .map_err(vkr("vkBindBufferMemory"))?;
            if required.contains(vk::MemoryPropertyFlags::HOST_VISIBLE) {
                // SAFETY: host-visible memory, not mapped yet, mapped whole.
                let ptr = unsafe {
                    device.map_memory(out.memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                }
                .map_err(vkr("vkMapMemory"))?;
                // Vulkan aligns mappings to minMemoryMapAlignment (at least 64 bytes), so the
                // word views of Mapped are aligned; check rather than trust.
                let ptr = NonNull::new(ptr.cast::<u8>())
                    .filter(|p| p.as_ptr().align_offset(4) == 0)
                    .ok_or(GpuError::Vk {
                        what: "vkMapMemory",
                        result: "null or unaligned pointer".to_owned(),
                    })?;
                out.mapped = Some(Mapped { ptr, len: size });
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                // SAFETY: the buffer was never used by the GPU.
                unsafe { out.destroy(device) };
                Err(e)
            }
        }
    }

    /// Makes one descriptor set per NV12 slot, alike but for the slot they bind.
    fn descriptors(&mut self) -> Result<(), GpuError> {
        let slots = NV12_SLOTS as u32;
        let sizes = [
            vk::DescriptorPoolSize::default()
                .ty(vk::DescriptorType::UNIFORM_BUFFER)
                .descriptor_count(slots),
            vk::DescriptorPoolSize::default()
                .ty(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(3 * slots),
        ];
        let info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(slots)
            .pool_sizes(&sizes);
        // SAFETY: live device, valid create info.
        self.descriptor_pool = unsafe { self.device().create_descriptor_pool(&info, None) }
            .map_err(vkr("vkCreateDescriptorPool"))?;
        let layouts = [self.gpu.set_layout; NV12_SLOTS];
        let info = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(self.descriptor_pool)
            .set_layouts(&layouts);
        // SAFETY: the pool has room for exactly these sets; the layout is live.
        let sets = unsafe { self.device().allocate_descriptor_sets(&info) }
            .map_err(vkr("vkAllocateDescriptorSets"))?;
        self.sets.copy_from_slice(&sets);
        let ring = &self.nv12;
        for (slot, &set) in sets.iter().enumerate() {
            let whole = |buffer| {
                [vk::DescriptorBufferInfo::default()
                    .buffer(buffer)
                    .range(vk::WHOLE_SIZE)]
            };
            // In binding order (see BINDINGS).
            let infos = [
                whole(self.uniform.buffer),
                whole(self.rgba.buffer),
                [vk::DescriptorBufferInfo::default()
                    .buffer(ring.buffer.buffer)
                    .offset((slot * ring.stride) as vk::DeviceSize)
                    .range(ring.frame_len as vk::DeviceSize)],
                whole(self.jobs.buffer),
            ];
            let writes: Vec<_> = (0..)
                .zip(BINDINGS)
                .zip(&infos)
                .map(|((binding, kind), info)| {
                    vk::WriteDescriptorSet::default()
                        .dst_set(set)
                        .dst_binding(binding)
                        .descriptor_type(kind)
                        .buffer_info(info)
                })
                .collect();
            // SAFETY: the set is not in use by any command buffer yet; the buffers are live;
            // the slot's offset is a multiple of SLOT_ALIGN, above any storage buffer offset
            // alignment, and its range lies inside the buffer.
            unsafe { self.device().update_descriptor_sets(&writes, &[]) };
        }
        Ok(())
    }

    /// Records the render command buffers once, one per NV12 slot; every frame replays one.
    fn record(&mut self) -> Result<(), GpuError> {
        let info = vk::CommandPoolCreateInfo::default().queue_family_index(self.gpu.queue_family);
        // SAFETY: live device; the family exists.
        self.command_pool = unsafe { self.device().create_command_pool(&info, None) }
            .map_err(vkr("vkCreateCommandPool"))?;
        if self.gpu.timestamps.is_some() {
            let info = vk::QueryPoolCreateInfo::default()
                .query_type(vk::QueryType::TIMESTAMP)
                .query_count(2);
            // SAFETY: live device, valid create info.
            self.queries = unsafe { self.device().create_query_pool(&info, None) }
                .map_err(vkr("vkCreateQueryPool"))?;
        }
        let buffers = self.command_buffers(NV12_SLOTS as u32)?;
        self.render_commands.copy_from_slice(&buffers);
        for slot in 0..NV12_SLOTS {
            self.record_render(slot)?;
        }
        Ok(())
    }

    /// Records the render pass into NV12 slot `slot`.
    fn record_render(&self, slot: usize) -> Result<(), GpuError> {
        let device = &self.gpu.device;
        let cb = self.render_commands[slot];
        let timed = self.queries != vk::QueryPool::null();
        // SAFETY: `cb` is a fresh primary command buffer of this device; every object recorded
        // (pipelines, layout, set, buffers, query pool) is live and outlives the command buffer;
        // the indirect dispatches read commands and jobs the CPU writes before each submit (host
        // writes are visible to the device at vkQueueSubmit), one workgroup per tile of the
        // kind; the kinds' tiles are disjoint, so their writes need no order among them; the
        // barrier orders the NV12 writes before the host reads it after the fence. The two
        // queries are reset before they are written.
        unsafe {
            record_commands(device, cb, || {
                if timed {
                    device.cmd_reset_query_pool(cb, self.queries, 0, 2);
                    device.cmd_write_timestamp(cb, Stage::TOP_OF_PIPE, self.queries, 0);
                }
                self.dispatch(cb, false, slot);
                if timed {
                    device.cmd_write_timestamp(cb, Stage::BOTTOM_OF_PIPE, self.queries, 1);
                }
                let nv12 = self.nv12.buffer.buffer;
                cmd_buffer_barrier(device, cb, nv12, SHADER_WRITE, HOST_READ);
            })
        }
    }

    /// Records the render pass (one pipeline per kind of tile; with `rgba` the variant of
    /// render.comp that stores RGBA too, which draws every tile) into NV12 slot `nv12_slot`: the
    /// slot's set, then per kind one workgroup per tile of its job list.
    ///
    /// # Safety
    /// `cb` is a command buffer of this device in the recording state; the target's descriptor
    /// sets are live.
    unsafe fn dispatch(&self, cb: vk::CommandBuffer, rgba: bool, nv12_slot: usize) {
        let pipelines = if rgba {
            &self.gpu.rgba_pipelines
        } else {
            &self.gpu.render_pipelines
        };
        let layout = self.gpu.pipeline_layout;
        let device = self.device();
        // SAFETY: per the caller's contract; the layout is the one the set was allocated for;
        // slot k of the jobs buffer's head is kind k's VkDispatchIndirectCommand.
        unsafe {
            device.cmd_bind_descriptor_sets(
                cb,
                vk::PipelineBindPoint::COMPUTE,
                layout,
                0,
                &[self.sets[nv12_slot]],
                &[],
            );
            for (slot, &pipeline) in (0u64..).zip(pipelines) {
                // The RGBA variant draws every plain tile, not only those whose pixels changed.
                let slot = if rgba && slot == 0 {
                    ALL_PLAIN_SLOT
                } else {
                    slot
                };
                device.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, pipeline);
                device.cmd_dispatch_indirect(cb, self.jobs.buffer, slot * DISPATCH_SLOT);
            }
        }
    }

    /// `count` primary command buffers from the target's pool.
    fn command_buffers(&self, count: u32) -> Result<Vec<vk::CommandBuffer>, GpuError> {
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.command_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(count);
        // SAFETY: the pool is live and only used from this Target, by `&mut self` methods (the
        // callers), so not from two threads at once.
        unsafe { self.device().allocate_command_buffers(&info) }
            .map_err(vkr("vkAllocateCommandBuffers"))
    }

    /// Waits for a submission left pending by an earlier failed wait.
    fn ensure_idle(&mut self, what: &'static str) -> Result<(), GpuError> {
        if self.in_flight {
            self.wait(what)?;
        }
        Ok(())
    }

    /// Waits for the fence of the submission in flight, then unsignals it.
    fn wait(&mut self, what: &'static str) -> Result<(), GpuError> {
        let timeout = u64::try_from(FENCE_TIMEOUT.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: the fence is live and was submitted with work on the shared queue.
        unsafe { self.device().wait_for_fences(&[self.fence], true, timeout) }
            .map_err(vkr(what))?;
        self.in_flight = false;
        // SAFETY: the fence is signalled and no queue operation refers to it any more.
        unsafe { self.device().reset_fences(&[self.fence]) }.map_err(vkr("vkResetFences"))
    }

    fn run(&mut self, buffers: &[vk::CommandBuffer], what: &'static str) -> Result<(), GpuError> {
        self.gpu.submit(buffers, self.fence)?;
        self.in_flight = true;
        self.wait(what)
    }

    /// Lends out a free NV12 slot for [`Self::execute`]; `None` when every slot is out, or
    /// when the memory is not host-cached (reading it in place would cost more than the copy).
    pub(crate) fn lend(&self) -> Option<Nv12Frame> {
        let ring = &self.nv12;
        if !ring
            .buffer
            .flags
            .contains(vk::MemoryPropertyFlags::HOST_CACHED)
        {
            return None;
        }
        ring.take().map(|slot| Nv12Frame {
            ring: Arc::clone(ring),
            slot,
        })
    }

    /// Lets `fill` write the frame's scene uniform and tile jobs (as 32-bit words; write
    /// only: the memory may be uncached), runs the render pass into the slot of `into` (a frame
    /// this target lent, which holds the picture once this returns `Ok`) or, with `None`, into
    /// slot 0 (read with [`Self::nv12`]), and waits for it. Returns its GPU time (from
    /// timestamps, or submit to fence).
    pub(crate) fn execute(
        &mut self,
        into: Option<&Nv12Frame>,
        fill: impl FnOnce(&mut [u32], &mut [u32]),
    ) -> Result<Duration, GpuError> {
        let slot = match into {
            None => 0,
            Some(frame) if Arc::ptr_eq(&frame.ring, &self.nv12) => frame.slot,
            Some(_) => {
                return Err(GpuError::Vk {
                    what: "render into a lent frame",
                    result: "a frame lent by another target".to_owned(),
                });
            }
        };
        self.ensure_idle("the previous frame")?;
        let (Some(uniform), Some(jobs)) = (self.uniform.mapped.as_mut(), self.jobs.mapped.as_mut())
        else {
            return Err(GpuError::NoMemoryType {
                what: "scene uniform",
            });
        };
        // Host-coherent memory: vkQueueSubmit makes these writes visible to the device.
        fill(uniform.words_mut(), jobs.words_mut());

        let start = Instant::now();
        self.run(&[self.render_commands[slot]], "render")?;
        let Some(ts) = self.gpu.timestamps else {
            return Ok(start.elapsed());
        };
        let mut ticks = [0u64; 2];
        // SAFETY: both queries were written by the submission just waited on.
        unsafe {
            self.device().get_query_pool_results(
                self.queries,
                0,
                &mut ticks,
                vk::QueryResultFlags::TYPE_64 | vk::QueryResultFlags::WAIT,
            )
        }
        .map_err(vkr("vkGetQueryPoolResults"))?;
        let ticks = ticks[1].wrapping_sub(ticks[0]) & ts.mask;
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "tick counts of one frame are far below 2^53"
        )]
        let ns = (ticks as f64 * ts.period_ns) as u64;
        Ok(Duration::from_nanos(ns))
    }

    /// The NV12 picture of the last [`Target::execute`] (slot 0).
    pub(crate) fn nv12(&mut self) -> Result<&[u8], GpuError> {
        self.ensure_idle("the previous frame")?;
        // SAFETY: nothing is in flight (waited above), so the GPU is not writing slot 0.
        let bytes = unsafe { self.nv12.slot(0) };
        if bytes.is_empty() {
            return Err(GpuError::NoMemoryType {
                what: "NV12 readback",
            });
        }
        Ok(bytes)
    }

    /// Copies the RGBA picture of the last [`Target::execute`] into `out` (width * height * 4
    /// bytes): draws the same scene again with the variant of the pass that stores RGBA too
    /// (the uniform and tile jobs are still those of the last frame), and copies it out
    /// through a host staging buffer made on first use. For tests and debugging.
    pub(crate) fn read_rgba(&mut self, out: &mut [u8]) -> Result<(), GpuError> {
        if out.len() != self.rgba.size {
            return Err(GpuError::BufferSize {
                what: "RGBA",
                expected: self.rgba.size,
                actual: out.len(),
            });
        }
        self.ensure_idle("the previous frame")?;
        if self.copy_commands == vk::CommandBuffer::null() {
            self.staging = self.buffer(
                "RGBA staging",
                self.rgba.size,
                vk::BufferUsageFlags::TRANSFER_DST,
                vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT,
                vk::MemoryPropertyFlags::HOST_CACHED,
            )?;
            self.copy_commands = self.record_copy()?;
        }
        self.run(&[self.copy_commands], "RGBA readback")?;
        let staged = self.staging.mapped.as_ref().ok_or(GpuError::NoMemoryType {
            what: "RGBA staging",
        })?;
        out.copy_from_slice(staged.bytes());
        Ok(())
    }

    fn record_copy(&self) -> Result<vk::CommandBuffer, GpuError> {
        let device = self.device();
        let cb = self.command_buffers(1)?[0];
        let region = [vk::BufferCopy::default().size(self.rgba.size as vk::DeviceSize)];
        // SAFETY: fresh command buffer; the pipeline, set and both buffers are live; the
        // buffers are of equal size, with TRANSFER_SRC and TRANSFER_DST usage; barriers order
        // the pass's writes before the copy and the copy before the host read.
        unsafe {
            record_commands(device, cb, || {
                // Into slot 0, which is never lent out.
                self.dispatch(cb, true, 0);
                let (rgba, staging) = (self.rgba.buffer, self.staging.buffer);
                cmd_buffer_barrier(device, cb, rgba, SHADER_WRITE, COPY_READ);
                device.cmd_copy_buffer(cb, rgba, staging, &region);
                cmd_buffer_barrier(device, cb, staging, COPY_WRITE, HOST_READ);
            })?;
        }
        Ok(cb)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.in_flight {
            // Best effort: on failure (device lost) the GPU is no longer running our work.
            let _ = self.wait("drop");
        }
        let device = &self.gpu.device;
        // SAFETY: no submission of this Target is pending (waited above), and nothing else
        // uses its objects. Reverse creation order; null handles are no-ops. Destroying the
        // command pool frees its command buffers, the descriptor pool its sets. The NV12 ring
        // goes with the last of this target and the frames it lent.
        unsafe {
            self.staging.destroy(device);
            device.destroy_fence(self.fence, None);
            device.destroy_query_pool(self.queries, None);
            device.destroy_command_pool(self.command_pool, None);
            device.destroy_descriptor_pool(self.descriptor_pool, None);
            self.rgba.destroy(device);
            self.jobs.destroy(device);
            self.uniform.destroy(device);
        }
        // `self.gpu` drops after this: the last Target of a dropped Gpu tears the device down.
    }
}
