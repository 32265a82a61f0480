// shrink's int8 KV-cache append: one call per decoder layer and step that quantizes the new keys and values into
// the cache (int8 codes, one float16 scale per token and head) and returns the whole cache de-quantized to float32.
// It computes exactly what shrink.llm.kv_cache's eager path computes (same scale, same rounding: half to even), in
// one pass instead of about a dozen tensor operations. Built on first use by torch.utils.cpp_extension.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>

namespace {

// float16's smallest normal number, the smallest scale stored (shrink.llm.kv_cache.MIN_SCALE)
constexpr float kMinScale = 1.0f / 16384.0f;

void quantize_rows(const at::TensorAccessor<float, 4>& src, int64_t b, int64_t h, int64_t tokens, int64_t dim,
                   int64_t start, int8_t* codes, at::Half* scales) {
  for (int64_t t = 0; t < tokens; ++t) {
    auto x = src[b][h][t];
    float amax = 0.0f;
    for (int64_t d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(x[d]));
    // PyTorch divides a tensor by a Python scalar as a product with its reciprocal: so does this
    const at::Half stored(std::max(amax * (1.0f / 127.0f), kMinScale));
    const float scale = static_cast<float>(stored);
    scales[start + t] = stored;
    int8_t* row = codes + (start + t) * dim;
    for (int64_t d = 0; d < dim; ++d) row[d] = static_cast<int8_t>(std::nearbyint(x[d] / scale));
  }
}

}  // namespace

// codes: int8 [2, batch, heads, capacity, dim]; scales: float16 [2, batch, heads, capacity, 1] (both contiguous);
// key, value: float32 [batch, heads, tokens, dim], any strides. Writes slots [start, start + tokens) and returns
// float32 [2, batch, heads, start + tokens, dim].
torch::Tensor kv_append(torch::Tensor codes, torch::Tensor scales, torch::Tensor key, torch::Tensor value,
                        int64_t start) {
  TORCH_CHECK(codes.dim() == 5 && codes.scalar_type() == torch::kInt8 && codes.is_contiguous(),
              "kv_append: codes must be contiguous int8 [2, batch, heads, capacity, dim]");
  TORCH_CHECK(scales.scalar_type() == torch::kHalf && scales.is_contiguous(), "kv_append: scales must be float16");
  const int64_t batch = codes.size(1), heads = codes.size(2), capacity = codes.size(3), dim = codes.size(4);
  TORCH_CHECK(scales.sizes() == torch::IntArrayRef({2, batch, heads, capacity, 1}), "kv_append: scales' shape");
  for (const auto& states : {key, value}) {
    TORCH_CHECK(states.device().is_cpu() && states.scalar_type() == torch::kFloat, "kv_append: float32 CPU states");
    TORCH_CHECK(states.dim() == 4 && states.size(0) == batch && states.size(1) == heads && states.size(3) == dim,
                "kv_append: key and value must be [batch, heads, tokens, dim] matching the cache");
  }
  const int64_t tokens = key.size(2), end = start + tokens;
  TORCH_CHECK(value.size(2) == tokens && start >= 0 && end <= capacity, "kv_append: tokens exceed the capacity");
  auto out = torch::empty({2, batch, heads, end, dim}, key.options());
  int8_t* all_codes = codes.data_ptr<int8_t>();
  at::Half* all_scales = scales.data_ptr<at::Half>();
  float* all_out = out.data_ptr<float>();
  for (int64_t kv = 0; kv < 2; ++kv) {
    const auto src = (kv == 0 ? key : value).accessor<float, 4>();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t row = (kv * batch + b) * heads + h;
        int8_t* c = all_codes + row * capacity * dim;
        at::Half* s = all_scales + row * capacity;
        quantize_rows(src, b, h, tokens, dim, start, c, s);
        float* o = all_out + row * end * dim;
        for (int64_t j = 0; j < end; ++j) {
          const float scale = static_cast<float>(s[j]);
          for (int64_t d = 0; d < dim; ++d) o[j * dim + d] = static_cast<float>(c[j * dim + d]) * scale;
        }
      }
    }
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("kv_append", &kv_append, "Quantize new keys and values into an int8 KV cache; return it de-quantized");
}
