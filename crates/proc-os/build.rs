//! Names the platforms where a task started in a cgroup is created with
//! `clone3(CLONE_VM | CLONE_VFORK)` on a stack of its own (see `src/cgroup_child.rs`): Linux on
//! the architectures for which that module has the few instructions that start the child on
//! its stack. Elsewhere such a child is a fork.

fn main() {
    cfg_aliases::cfg_aliases! {
        vm_child: {
            all(
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")
            )
        },
    }
}
