pub fn run(_name: &str, _keep: bool) -> mvnet_core::Result<u8> {
    Ok(0)
}
