// Operator schemas of the cmasktrack library and the Python module `cmasktrack._C`.
//
// Importing `cmasktrack._C` loads this shared library, whose static initialisers register
// the schemas below and the CPU (csrc/cpu) and, when built, CUDA (csrc/cuda) kernels with the
// PyTorch dispatcher.  The ops are then callable as torch.ops.cmasktrack.<name>; autograd and
// fake-tensor (meta) support are registered from Python (cmasktrack/ops/_extension.py).
#include <Python.h>

#include <torch/library.h>

// Name of the CPU kernel variant chosen at load time ("avx512", "avx2" or "generic") and the
// comma-separated variants the running CPU supports, widest first; csrc/cpu.
extern "C" const char* cmasktrack_cpu_kernel_isa();
extern "C" const char* cmasktrack_cpu_kernel_isas();
#ifdef CMASKTRACK_WITH_CUDA
// CUDA runtime version the CUDA kernels were compiled against (e.g. 13000); csrc/cuda.
extern "C" int cmasktrack_cuda_compiled_version();
#endif

TORCH_LIBRARY(cmasktrack, m) {
  m.def("correlation(Tensor input1, Tensor input2, int patch_size, int dilation_patch) -> Tensor");
  m.def(
      "correlation_backward(Tensor grad_output, Tensor input1, Tensor input2, int patch_size, "
      "int dilation_patch) -> (Tensor, Tensor)");
}

static struct PyModuleDef cmasktrack_c_module = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "Compiled cmasktrack operators; importing this module registers torch.ops.cmasktrack.*",
    -1,
    nullptr,
};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&cmasktrack_c_module);
  if (module == nullptr) {
    return nullptr;
  }
#ifdef CMASKTRACK_WITH_CUDA
  const int with_cuda = 1;
  const int cuda_version = cmasktrack_cuda_compiled_version();
#else
  const int with_cuda = 0;
  const int cuda_version = 0;
#endif
  if (PyModule_AddIntConstant(module, "with_cuda", with_cuda) < 0 ||
      PyModule_AddIntConstant(module, "cuda_version", cuda_version) < 0 ||
      PyModule_AddStringConstant(module, "cpu_kernel_isa", cmasktrack_cpu_kernel_isa()) < 0 ||
      PyModule_AddStringConstant(module, "cpu_kernel_isas", cmasktrack_cpu_kernel_isas()) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
