//! Choosing the adapter as wgpu's own tools do: `WGPU_BACKEND` narrows the backends,
//! `WGPU_ADAPTER_NAME` picks one by a substring of its name, `WGPU_POWER_PREF` steers the
//! default choice.

use super::GpuError;

/// The hint appended to "no adapter" errors.
pub const DRIVER_HINT: &str = "install a Vulkan driver (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers \
     libvulkan1, which includes lavapipe, a CPU implementation), or pick another backend or \
     adapter with WGPU_BACKEND (vulkan, metal, dx12) and WGPU_ADAPTER_NAME";

pub(super) fn backend_name(b: wgpu::Backend) -> String {
    format!("{b:?}").to_lowercase()
}

/// Picks the adapter: `WGPU_ADAPTER_NAME` (a case-insensitive substring of the name) if set,
/// otherwise wgpu's default choice (which honours `WGPU_POWER_PREF`). Unlike
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
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|e| GpuError::Unavailable(format!("no GPU adapter found ({e}); {DRIVER_HINT}")))
}
