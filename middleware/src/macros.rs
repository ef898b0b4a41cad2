//! Macros shared by the layers.

/// `get_ref`, `get_mut` and `into_inner` for a service struct whose wrapped service is the field
/// `inner` (as tower-http's `define_inner_service_accessors!`). Use inside `impl<S> Foo<S>`.
#[allow(unused_macros)] // unused when every layer feature is off
macro_rules! define_inner_service_accessors {
    () => {
        /// A reference to the inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// A mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
