pub mod headless {
    pub struct Headless;
    impl Headless {
        pub fn new(_: bool) -> Headless {
            Headless
        }
        pub fn on_event(&mut self, _: &crate::run::Event) -> Vec<String> {
            vec![]
        }
    }
}
pub mod trace {
    pub fn trace_json(_: &crate::run::Event, _: &crate::sched::Snapshot) -> serde_json::Value {
        unimplemented!()
    }
}
