"""``python -m tactus_kernel``: start the kernel (``-f CONNECTION``) or run the CLI."""

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("install", "replay", "import", "--help", "-h", "--version"):
        from tactus_kernel.cli import main as cli_main

        sys.exit(cli_main())
    from ipykernel.kernelapp import IPKernelApp

    from tactus_kernel.jupyter.kernel import TactusKernel

    IPKernelApp.launch_instance(kernel_class=TactusKernel)


if __name__ == "__main__":
    main()
