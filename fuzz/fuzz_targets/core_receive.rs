#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyway::fuzzing::core_receive(data));
