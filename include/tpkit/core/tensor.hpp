// tpkit/core/tensor.hpp: non-owning tensor views and owning host buffers.
//
// TensorView<T> is a typed view (pointer, shape, strides in elements, memory kind).
// RawTensorView is the same with the element type carried at run time; checkpoint loaders hand
// these to layers, which convert to their storage type while copying only their own shard.
// Views never own memory: HostBuffer<T> (and, on the GPU path, a device buffer) does.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#include "tpkit/config.hpp"
#include "tpkit/core/checked_math.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"

namespace tpkit {

// Where a view's memory lives; kernels and ops check it so a host pointer never reaches a GPU
// kernel (or the reverse) silently.
enum class MemoryKind : std::uint8_t { host, device };

inline const char* memory_kind_name(MemoryKind m) { return m == MemoryKind::host ? "host" : "device"; }

inline constexpr int kMaxTensorRank = 4;

// Shape and strides shared by the typed and the raw view.
class Layout {
 public:
  Layout() = default;
  Layout(std::initializer_list<std::int64_t> shape) {
    TPKIT_REQUIRE(shape.size() <= std::size_t(kMaxTensorRank), "tensor rank ", shape.size(), " exceeds the maximum ",
                  kMaxTensorRank);
    rank_ = int(shape.size());
    std::copy(shape.begin(), shape.end(), shape_.begin());
    for (int i = 0; i < rank_; ++i)
      TPKIT_REQUIRE(shape_[i] >= 0, "dimension ", i, " of a tensor shape is negative (", shape_[i], ")");
    std::int64_t stride = 1;
    for (int i = rank_ - 1; i >= 0; --i) {
      strides_[i] = stride;
      stride = checked_mul(stride, shape_[i], "tensor element count");
    }
  }
  Layout(std::initializer_list<std::int64_t> shape, std::initializer_list<std::int64_t> strides) : Layout(shape) {
    TPKIT_REQUIRE(strides.size() == shape.size(), "tensor has ", shape.size(), " dimensions but ", strides.size(),
                  " strides");
    std::copy(strides.begin(), strides.end(), strides_.begin());
  }

  int rank() const { return rank_; }
  std::int64_t size(int dim) const { return shape_[check_dim(dim)]; }
  std::int64_t stride(int dim) const { return strides_[check_dim(dim)]; }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n = checked_mul(n, shape_[i], "tensor element count");
    return n;
  }
  bool is_contiguous() const {
    std::int64_t expected = 1;
    for (int i = rank_ - 1; i >= 0; --i) {
      if (shape_[i] != 1 && strides_[i] != expected) return false;
      expected *= shape_[i];
    }
    return true;
  }
  // Rows of a 2-D tensor are contiguous (stride 1 along columns); rows may be spaced apart.
  bool has_contiguous_rows() const { return rank_ == 2 && (strides_[1] == 1 || shape_[1] <= 1); }

  std::string shape_string() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
    return s + "]";
  }

 protected:
  int check_dim(int dim) const {
    TPKIT_REQUIRE(dim >= 0 && dim < rank_, "dimension ", dim, " out of range for a rank-", rank_, " tensor");
    return dim;
  }
  std::array<std::int64_t, kMaxTensorRank> shape_{};
  std::array<std::int64_t, kMaxTensorRank> strides_{};
  int rank_ = 0;
};

template <class T>
class TensorView : public Layout {
 public:
  using element_type = T;

  TensorView() = default;
  TensorView(T* data, std::initializer_list<std::int64_t> shape, MemoryKind memory = MemoryKind::host)
      : Layout(shape), data_(data), memory_(memory) {}
  TensorView(T* data, std::initializer_list<std::int64_t> shape, std::initializer_list<std::int64_t> strides,
             MemoryKind memory = MemoryKind::host)
      : Layout(shape, strides), data_(data), memory_(memory) {}
  TensorView(T* data, const Layout& layout, MemoryKind memory) : Layout(layout), data_(data), memory_(memory) {}

  // A view of T converts to a view of const T.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  TensorView(const TensorView<U>& other) : Layout(other), data_(other.data()), memory_(other.memory()) {}

  T* data() const { return data_; }
  MemoryKind memory() const { return memory_; }
  static constexpr DType dtype() { return dtype_of_v<std::remove_const_t<T>>; }

  // Row i of a 2-D view (host or device pointer; dereference only where the memory lives).
  T* row(std::int64_t i) const { return data_ + i * strides_[0]; }
  T& operator()(std::int64_t i, std::int64_t j) const { return data_[i * strides_[0] + j * strides_[1]]; }

  // Rows [begin, end) of a 2-D view.
  TensorView rows(std::int64_t begin, std::int64_t end) const {
    TPKIT_REQUIRE(rank_ == 2 && 0 <= begin && begin <= end && end <= shape_[0], "rows [", begin, ", ", end,
                  ") out of range for a tensor of shape ", shape_string());
    TensorView v = *this;
    v.data_ = data_ + begin * strides_[0];
    v.shape_[0] = end - begin;
    return v;
  }

 private:
  T* data_ = nullptr;
  MemoryKind memory_ = MemoryKind::host;
};

// A read-only view whose element type is known only at run time (checkpoint tensors).
class RawTensorView : public Layout {
 public:
  RawTensorView() = default;
  RawTensorView(const void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                MemoryKind memory = MemoryKind::host)
      : Layout(shape), data_(data), dtype_(dtype), memory_(memory) {}
  RawTensorView(const void* data, DType dtype, const Layout& layout, MemoryKind memory)
      : Layout(layout), data_(data), dtype_(dtype), memory_(memory) {}
  template <class T>
  RawTensorView(const TensorView<T>& v) : Layout(v), data_(v.data()), dtype_(v.dtype()), memory_(v.memory()) {}

  const void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  MemoryKind memory() const { return memory_; }
  bool empty() const { return data_ == nullptr; }

  // Element (i, j) of a host 2-D view as float, whatever the stored dtype.
  float load(std::int64_t i, std::int64_t j) const {
    const std::int64_t offset = i * strides_[0] + j * strides_[1];
    return load_flat(offset);
  }
  // Element i of a host 1-D view as float.
  float load(std::int64_t i) const { return load_flat(i * strides_[0]); }

  // Rows [begin, end) of a 2-D view (or elements of a 1-D view).
  RawTensorView rows(std::int64_t begin, std::int64_t end) const {
    TPKIT_REQUIRE(rank_ >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "rows [", begin, ", ", end,
                  ") out of range for a tensor of shape ", shape_string());
    RawTensorView v = *this;
    v.data_ = static_cast<const unsigned char*>(data_) + begin * strides_[0] * std::int64_t(dtype_size(dtype_));
    v.shape_[0] = end - begin;
    return v;
  }

 private:
  float load_flat(std::int64_t offset) const {
    const auto* p = static_cast<const unsigned char*>(data_) + offset * std::int64_t(dtype_size(dtype_));
    switch (dtype_) {
      case DType::f32:
        return read<float>(p);
      case DType::f64:
        return float(read<double>(p));
      case DType::f16:
        return half::to_float(read<std::uint16_t>(p));
      case DType::bf16:
        return bfloat16::to_float(read<std::uint16_t>(p));
      case DType::i32:
        return float(read<std::int32_t>(p));
      case DType::i64:
        return float(read<std::int64_t>(p));
      case DType::u8:
        return float(*p);
    }
    return 0.0f;
  }
  template <class U>
  static U read(const unsigned char* p) {
    U v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }

  const void* data_ = nullptr;
  DType dtype_ = DType::f32;
  MemoryKind memory_ = MemoryKind::host;
};

// Owning, 64-byte aligned, uninitialised host storage. Moves, never copies implicitly.
template <class T>
class HostBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "HostBuffer holds trivially copyable elements");

 public:
  static constexpr std::size_t kAlignment = 64;

  HostBuffer() = default;
  explicit HostBuffer(std::size_t count) : count_(count) {
    if (count)
      data_.reset(static_cast<T*>(
          ::operator new[](checked_bytes(count, sizeof(T), "HostBuffer size"), std::align_val_t(kAlignment))));
  }
  HostBuffer(std::size_t count, T fill) : HostBuffer(count) { std::fill(begin(), end(), fill); }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t size() const { return count_; }
  T* begin() { return data(); }
  T* end() { return data() + count_; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + count_; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }

  // Grows (never shrinks) so that a workspace reused every step allocates only at its high-water mark.
  void reserve_at_least(std::size_t count) {
    if (count > count_) *this = HostBuffer(count);
  }

  TensorView<T> view(std::initializer_list<std::int64_t> shape) { return checked_view<T>(data(), shape); }
  TensorView<const T> view(std::initializer_list<std::int64_t> shape) const {
    return checked_view<const T>(data(), shape);
  }

 private:
  template <class U>
  TensorView<U> checked_view(U* p, std::initializer_list<std::int64_t> shape) const {
    TensorView<U> v(p, shape, MemoryKind::host);
    TPKIT_REQUIRE(std::size_t(v.numel()) <= count_, "view of shape ", v.shape_string(), " needs ", v.numel(),
                  " elements but the buffer holds ", count_);
    return v;
  }
  struct Deleter {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(kAlignment)); }
  };
  std::unique_ptr<T[], Deleter> data_;
  std::size_t count_ = 0;
};

}  // namespace tpkit
