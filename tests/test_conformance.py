"""The Jupyter community's kernel conformance suite, configured for Lua."""

from __future__ import annotations

import unittest

import jupyter_kernel_test


class TactusKernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = "tactus"
    language_name = "lua"
    file_extension = ".lua"

    code_hello_world = 'print("hello, world")'
    code_stderr = 'Log.error("oops")'
    completion_samples = [
        {"text": "Human.appr", "matches": {"approve"}},
        {"text": "Step.", "matches": {"run"}},
    ]
    complete_code_samples = ["x = 1", "function f() return 1 end", "%tactus records"]
    incomplete_code_samples = ["function f()", "if x then", "t = {"]
    invalid_code_samples = ["x = = 1", "end end"]
    code_display_data = [
        {"code": 'Human.notify({message = "hi"})', "mime": "text/html"},
    ]
    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": '"a" .. "b"', "result": "ab"},
    ]
    code_inspect_sample = "Step.run"
    code_generate_error = "error('boom')"


if __name__ == "__main__":
    unittest.main()
