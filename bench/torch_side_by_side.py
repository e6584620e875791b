"""PyTorch's decode attention and linear layers on bench_gpu's shapes, for the side-by-side
tables of docs/performance.md. Run by bench/run_gpu_bench.sh right after bench_gpu, on the same
GPU; it measures the copy bandwidth again the same way (1 GiB device-to-device copy, read +
write bytes, best of 10), so each fraction is against the limit measured in its own run.

Attention is torch's scaled_dot_product_attention over a contiguous (not paged) KV cache, the
layout PyTorch has; linear layers are torch.nn.functional.linear (cuBLAS). Times are medians of
CUDA-event timings after a warm-up. Prints "skipped" and exits 0 where PyTorch with CUDA is
absent.
"""
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("PyTorch is not installed: side-by-side tables skipped")
    sys.exit(0)
if not torch.cuda.is_available():
    print("PyTorch has no CUDA device: side-by-side tables skipped")
    sys.exit(0)


def median_seconds(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth():
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    best = min(median_seconds(lambda: dst.copy_(src), reps=1, warmup=1 if i == 0 else 0) for i in range(10))
    return 2.0 * n / best


def attention(copy_bw):
    print("\n## PyTorch decode attention (bf16 SDPA, contiguous KV, head_dim 128, 32 query heads)\n")
    print("| group | batch | context | KV read | time | bandwidth | of copy |\n|---|---|---|---|---|---|---|")
    hd, q_heads = 128, 32
    gqa = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")
    for group in (4, 8):
        kv_heads = q_heads // group
        for batch in (1, 8, 32, 64, 128, 256):
            for context in (1024, 4096, 16384, 32768):
                kv_bytes = 2 * batch * context * kv_heads * hd * 2
                if 2 * kv_bytes > torch.cuda.mem_get_info()[0] * 0.8:
                    print(f"| {group} | {batch} | {context} | {kv_bytes / 1e6:.1f} MB | - | - | (no room) |")
                    continue
                q = torch.randn(batch, q_heads, 1, hd, dtype=torch.bfloat16, device="cuda")
                k = torch.randn(batch, kv_heads, context, hd, dtype=torch.bfloat16, device="cuda")
                v = torch.randn_like(k)
                if gqa:
                    run = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                else:  # older torch: the KV heads repeated outside the timing would flatter it
                    run = lambda: F.scaled_dot_product_attention(
                        q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1))
                t = median_seconds(run)
                print(f"| {group} | {batch} | {context} | {kv_bytes / 1e6:.1f} MB | {t * 1e6:.1f} us | "
                      f"{kv_bytes / t / 1e9:.0f} GB/s | {100 * kv_bytes / t / copy_bw:.0f}% |")
                del q, k, v
                torch.cuda.empty_cache()


def linears(copy_bw):
    print("\n## PyTorch linear layers of Llama-3-8B (bf16, F.linear)\n")
    print("| layer | N x K | batch | time | weight bandwidth | of copy |\n|---|---|---|---|---|---|")
    shapes = [("qkv_proj", 6144, 4096), ("o_proj", 4096, 4096), ("gate_up_proj", 28672, 4096),
              ("down_proj", 4096, 14336), ("lm_head", 128256, 4096)]
    for name, n, k in shapes:
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
        for batch in (1, 16):
            x = torch.randn(batch, k, dtype=torch.bfloat16, device="cuda")
            t = median_seconds(lambda: F.linear(x, w))
            weight = n * k * 2
            print(f"| {name} | {n} x {k} | {batch} | {t * 1e6:.1f} us | {weight / t / 1e9:.0f} GB/s | "
                  f"{100 * weight / t / copy_bw:.0f}% |")


if __name__ == "__main__":
    bw = copy_bandwidth()
    print(f"# PyTorch {torch.__version__} on {torch.cuda.get_device_name()}\n")
    print(f"copy bandwidth (read + write), measured by PyTorch: {bw / 1e9:.0f} GB/s")
    attention(bw)
    linears(bw)
