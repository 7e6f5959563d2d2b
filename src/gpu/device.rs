//! Adapter choice: which wgpu adapter (if any) a worker runs on.

use wgpu::{Backend, DeviceType};

use super::{DRIVER_HINT, Error, Result};
use crate::config::Device;

/// An opened adapter: the device and queue every kernel runs on.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The adapter's own limits, all of which the device was opened with.
    pub limits: wgpu::Limits,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("device_type", &self.info.device_type)
            .finish()
    }
}

/// Picks the adapter for `device`.
///
/// - `Auto`: a real GPU adapter when there is one, else `Ok(None)` (the
///   native CPU path). A CPU-type adapter is never picked here.
/// - `Gpu`: a real GPU adapter, or an error listing the adapters found.
/// - `WgpuCpu`: the CPU-type adapter (lavapipe), or an error.
/// - `Cpu`: `Ok(None)`.
pub fn choose(device: Device) -> Result<Option<Gpu>> {
    if device == Device::Cpu {
        return Ok(None);
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let found = describe(&adapters);
    let pick = match device {
        Device::Auto | Device::Gpu => best(&adapters, is_real_gpu),
        Device::WgpuCpu => best(&adapters, |t| t == DeviceType::Cpu),
        Device::Cpu => None,
    };
    let Some(adapter) = pick else {
        return match device {
            Device::Auto => Ok(None),
            Device::Gpu => Err(Error::NoAdapter {
                wanted: "GPU (discrete, integrated or virtual)",
                found,
                hint: "; use device = \"auto\" or \"cpu\" on a host without a GPU",
            }),
            _ => Err(Error::NoAdapter {
                wanted: "CPU-type (software, e.g. lavapipe)",
                found,
                hint: DRIVER_HINT,
            }),
        };
    };
    open(adapter).map(Some)
}

fn is_real_gpu(t: DeviceType) -> bool {
    matches!(
        t,
        DeviceType::DiscreteGpu | DeviceType::IntegratedGpu | DeviceType::VirtualGpu
    )
}

/// The best adapter whose type passes `want`: discrete before integrated
/// before virtual, native backends (Vulkan, Metal, DX12) before GL.
fn best(adapters: &[wgpu::Adapter], want: impl Fn(DeviceType) -> bool) -> Option<&wgpu::Adapter> {
    let rank = |a: &wgpu::Adapter| {
        let info = a.get_info();
        let kind = match info.device_type {
            DeviceType::DiscreteGpu => 0,
            DeviceType::IntegratedGpu => 1,
            DeviceType::VirtualGpu => 2,
            _ => 3,
        };
        let backend = match info.backend {
            Backend::Vulkan | Backend::Metal | Backend::Dx12 => 0,
            _ => 1,
        };
        (kind, backend)
    };
    adapters
        .iter()
        .filter(|a| want(a.get_info().device_type))
        .min_by_key(|a| rank(a))
}

fn describe(adapters: &[wgpu::Adapter]) -> String {
    if adapters.is_empty() {
        return "none; no Vulkan, Metal, DX12 or GL driver could be loaded".to_string();
    }
    adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("'{}' ({:?}, {:?})", i.name, i.device_type, i.backend)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn open(adapter: &wgpu::Adapter) -> Result<Gpu> {
    let info = adapter.get_info();
    let limits = adapter.limits();
    // Timestamp queries let `herd bench gpu` say which kernel the time went to.
    let desc = wgpu::DeviceDescriptor {
        label: Some("herd"),
        required_limits: limits.clone(),
        required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
        ..Default::default()
    };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;
    Ok(Gpu {
        device,
        queue,
        info,
        limits,
    })
}
