//! Choosing the adapter as wgpu's own tools do: `WGPU_BACKEND` narrows the backends,
//! `WGPU_ADAPTER_NAME` picks one by a substring of its name, `WGPU_POWER_PREF` steers the
//! default choice. Without either of the last two, a hardware GPU is preferred over a software
//! one (lavapipe, WARP), which wgpu's default choice may otherwise return first.

use super::GpuError;

/// The hint appended to "no adapter" errors.
pub const DRIVER_HINT: &str = "install a Vulkan driver (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers \
     libvulkan1, which includes lavapipe, a CPU implementation), or pick another backend or \
     adapter with WGPU_BACKEND (vulkan, metal, dx12) and WGPU_ADAPTER_NAME";

pub(super) fn backend_name(b: wgpu::Backend) -> String {
    format!("{b:?}").to_lowercase()
}

/// How much a device type is preferred when nothing in the environment chooses (lower first).
fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Picks the adapter: `WGPU_ADAPTER_NAME` (a case-insensitive substring of the name) if set;
/// else wgpu's default choice under `WGPU_POWER_PREF` if that is set; else the most hardware
/// of the adapters found ([`preference`]; wgpu's enumeration order among equals). Unlike
/// `wgpu::util::initialize_adapter_from_env`, a name that matches nothing is an error, not a
/// panic.
pub(super) async fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter, GpuError> {
    let backends = wgpu::Backends::from_env().unwrap_or_default();
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let wanted = wanted.to_lowercase();
        let adapters = instance.enumerate_adapters(backends).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
            .ok_or_else(|| GpuError::Unavailable(format!("WGPU_ADAPTER_NAME={wanted:?} matches none of the adapters found: {names:?}")));
    }
    let power_preference = wgpu::PowerPreference::from_env();
    if power_preference.is_none() {
        let adapters = instance.enumerate_adapters(backends).await;
        if let Some(best) = adapters.into_iter().min_by_key(|a| preference(a.get_info().device_type)) {
            return Ok(best);
        }
    }
    instance
        .request_adapter(&wgpu::RequestAdapterOptions { power_preference: power_preference.unwrap_or_default(), ..Default::default() })
        .await
        .map_err(|e| GpuError::Unavailable(format!("no GPU adapter found ({e}); {DRIVER_HINT}")))
}

#[cfg(test)]
mod tests {
    use super::preference;
    use wgpu::DeviceType::*;

    #[test]
    fn hardware_adapters_come_before_software_ones() {
        let mut types = [Cpu, Other, VirtualGpu, IntegratedGpu, DiscreteGpu];
        types.sort_by_key(|&t| preference(t));
        assert_eq!(types, [DiscreteGpu, IntegratedGpu, VirtualGpu, Other, Cpu]);
    }
}
