pub type Result<T> = std::result::Result<T, Error>;
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct Error;
pub struct Gpu {
    pub info: wgpu::AdapterInfo,
}
pub fn choose(_: crate::config::Device) -> Result<Option<Gpu>> {
    unimplemented!()
}
pub struct GpuModel;
impl GpuModel {
    pub fn new(_: &Gpu, _: &crate::model::Model) -> Result<GpuModel> {
        unimplemented!()
    }
    pub fn predict(&self, _: &Gpu, _: &crate::model::Rows) -> Result<crate::model::Predictions> {
        unimplemented!()
    }
}
