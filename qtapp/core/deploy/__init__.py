"""Layer 6, beside `tune`: files that ship: TorchScript/.ptl export, ONNX (torch.onnx and onnxruntime's
own quantizer), ExecuTorch lowering and running, and timing each file in its runtime in a worker process."""
