"""Which onnxruntime execution providers the models use: the CUDA-picking logic, tested on the provider lists
onnxruntime reports (no GPU is lent to these machines; the real CUDA path is exercised by bench/gpu.py where one is)."""

from __future__ import annotations

import onnxruntime

from face_pipeline.core.models import GPU_FIX, choose_providers, pick_providers
from face_pipeline.settings import Settings

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]  # onnxruntime-gpu 1.31.1
CPU_BUILD = ["AzureExecutionProvider", "CPUExecutionProvider"]  # onnxruntime 1.31.1 (measured)


def test_cuda_first_when_the_gpu_build_offers_it():
    assert pick_providers(None, GPU_BUILD, True) == (["CUDAExecutionProvider", "CPUExecutionProvider"], None)


def test_cpu_when_no_gpu_build():
    assert pick_providers(None, CPU_BUILD, False) == (["CPUExecutionProvider"], None)


def test_gpu_build_shadowed_by_the_cpu_files_is_reported_with_the_fix():
    providers, warning = pick_providers(None, CPU_BUILD, True)
    assert providers == ["CPUExecutionProvider"] and GPU_FIX in warning and "CUDA is not offered" in warning


def test_explicit_providers_win():
    assert pick_providers(" CPUExecutionProvider , ", GPU_BUILD, True) == (["CPUExecutionProvider"], None)
    assert pick_providers("CUDAExecutionProvider,CPUExecutionProvider", CPU_BUILD, False)[0][0] == "CUDAExecutionProvider"


def test_this_machine_gets_what_its_onnxruntime_offers():
    chosen = choose_providers(Settings())
    available = onnxruntime.get_available_providers()
    assert chosen and set(chosen) <= set(available)
    assert ("CUDAExecutionProvider" in chosen) == ("CUDAExecutionProvider" in available)
