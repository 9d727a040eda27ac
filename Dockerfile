# The alexnet CLI in a container.
#
#   docker build -t alexnet .                      CPU image: Debian bookworm and Debian's LibTorch 1.13
#   docker build --target cuda -t alexnet:cuda .   CUDA image: the LibTorch inside PyPI's torch
#
# The CPU image stays on Debian's LibTorch: it trains the main job 1.09x faster end to end
# (BENCHMARKS.md, "Two LibTorch flavours side by side") and it fits in well under 1 GB, where PyPI's torch is
# the CUDA build (about 4 GB of libraries). The CUDA image builds against exactly what CI
# compiles: torch pinned in scripts/requirements-pypi.txt.
# The CPU stages come last, so a build without --target produces the CPU image; BuildKit and
# buildah then skip the CUDA stages without pulling their base images.
# Each runtime stage installs the packages that provide the libraries the binary links
# (scripts/runtime_packages.sh, run in the build stage) and nothing for building.

ARG DEBIAN_IMAGE=debian:bookworm-slim
# nvcc for LibTorch's CMake files at build time; the CUDA libraries themselves come with pip's torch.
ARG CUDA_VERSION=13.0.2
ARG CUDA_UBUNTU=ubuntu24.04

# ---------------------------------------------------------------------------------------------
# CUDA: PyPI's torch (its LibTorch and its CUDA, cuDNN and NCCL wheels); OpenCV, cxxopts,
# spdlog, gloo's headers from Ubuntu.

FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_UBUNTU} AS cuda-build
ARG DEBIAN_FRONTEND=noninteractive
# Our sources have no CUDA kernels; the list only spares LibTorch's CMake from probing for a GPU,
# which the build machine need not have.
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;9.0;10.0;12.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
      cmake ninja-build g++ libopencv-dev libcxxopts-dev nlohmann-json3-dev libspdlog-dev libgloo-dev libjpeg-dev zlib1g-dev \
      libcpp-httplib-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/requirements-pypi.txt /tmp/requirements-pypi.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements-pypi.txt

WORKDIR /src
COPY . .
# pip's torch finds its CUDA libraries through relative RPATHs (torch/lib -> ../../nvidia/...):
# torch/lib and nvidia/ are staged side by side, as in site-packages.
# The binary finds LibTorch through its RPATH: LibTorch's folder in the loader's cache would
# put pip's libgomp and libgfortran ahead of Ubuntu's for every other library too.
RUN site=$(/opt/venv/bin/python -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))') \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DALEXNET_BUILD_TESTS=OFF \
      -DCMAKE_PREFIX_PATH="$site/torch" -DCMAKE_BUILD_RPATH=/opt/pytorch/torch/lib \
 && cmake --build build --target alexnet \
 && mkdir -p /staging/usr/local/bin /staging/opt/pytorch/torch \
 && install -m 0755 build/app/alexnet /staging/usr/local/bin/alexnet \
 && cp -a "$site/torch/lib" /staging/opt/pytorch/torch/lib \
 && rm -f /staging/opt/pytorch/torch/lib/libtorch_python.so \
 && cp -a "$site/nvidia" /staging/opt/pytorch/nvidia \
 && find /staging/opt/pytorch/nvidia \( -name include -type d -prune -o -name '*.a' \) -exec rm -rf {} + \
 && scripts/runtime_packages.sh build/app/alexnet > /staging/runtime-packages

FROM nvidia/cuda:${CUDA_VERSION}-base-${CUDA_UBUNTU} AS cuda
ARG DEBIAN_FRONTEND=noninteractive
COPY --from=cuda-build /staging/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) dataset-fashion-mnist \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=cuda-build /staging/opt/pytorch/ /opt/pytorch/
COPY --from=cuda-build /staging/usr/local/bin/alexnet /usr/local/bin/alexnet
# libcuda.so.1 is the host driver's, mounted by the NVIDIA container runtime (docker run --gpus);
# any other missing library fails the build here rather than the first run.
RUN ! ldd /usr/local/bin/alexnet | grep -v 'libcuda\.so' | grep 'not found'
# Ubuntu's images already give uid 1000 to "ubuntu".
RUN if id ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin alexnet \
 && mkdir /out \
 && chown alexnet:alexnet /out
USER alexnet
WORKDIR /out
VOLUME /out
# alexnet serve's default port (it needs --host 0.0.0.0 to be reached from outside the container).
# Its management port (8081, POST /reload) stays on the container's loopback and is not exposed.
EXPOSE 8080
ENTRYPOINT ["alexnet"]
CMD ["--help"]
ARG VERSION=0.1.0
ARG SOURCE=
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="alexnet (CUDA)" \
      org.opencontainers.image.description="torchvision's AlexNet in C++/LibTorch: train, eval, predict, serve, info, export, bench; CUDA build" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}"

# ---------------------------------------------------------------------------------------------
# CPU (the default): everything from Debian bookworm.

FROM ${DEBIAN_IMAGE} AS cpu-build
ARG DEBIAN_FRONTEND=noninteractive
# The native build's package list (ALEXNET_BUILD_PACKAGES), so the two cannot drift apart.
COPY scripts/common.sh /tmp/common.sh
RUN bash -c 'source /tmp/common.sh \
      && apt-get update \
      && apt-get install -y --no-install-recommends "${ALEXNET_BUILD_PACKAGES[@]}" libjpeg-dev' \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DALEXNET_BUILD_TESTS=OFF \
 && cmake --build build --target alexnet \
 && mkdir -p /staging/usr/local/bin \
 && install -m 0755 build/app/alexnet /staging/usr/local/bin/alexnet \
 && scripts/runtime_packages.sh build/app/alexnet > /staging/runtime-packages

# The library for programs of your own (docker build --target cpu-dev): the build image with
# the alexnet package installed under /usr/local (libalexnet.a, <alexnet/classifier.h>,
# find_package(alexnet)); tests/consumer is built against it here as a check.
FROM cpu-build AS cpu-dev
RUN cmake --build build --target alexnet_classifier \
 && cmake --install build --component dev --prefix /usr/local \
 && cmake -S tests/consumer -B /tmp/consumer -G Ninja -DCMAKE_BUILD_TYPE=Release \
 && cmake --build /tmp/consumer \
 && { /tmp/consumer/classify; test $? -eq 2; } \
 && rm -rf /tmp/consumer

FROM ${DEBIAN_IMAGE} AS cpu
ARG DEBIAN_FRONTEND=noninteractive
COPY --from=cpu-build /staging/runtime-packages /tmp/runtime-packages
# libopenblas0-openmp: without it Debian's LibTorch uses the reference BLAS (Linear layers ~60x slower).
# dataset-fashion-mnist: the default training data, so `docker run alexnet train` needs no mounts.
# Debian's LibTorch links OpenCV's GUI, video and GDAL modules, whose packages bring Mesa's GL
# drivers (and LLVM, which only they load), Intel's video-encoding plugins, map projection data
# and the Python bindings. Nothing here opens a window or GL context, encodes video, reprojects
# or runs Python, so dpkg leaves those files out (~230 MB); the packages stay installed for apt.
# A library the binary does link cannot be among them: `alexnet --help` below would fail.
RUN printf 'path-exclude %s\n' \
      '/usr/lib/x86_64-linux-gnu/dri/*' '/usr/lib/x86_64-linux-gnu/libLLVM-*' \
      '/usr/lib/x86_64-linux-gnu/libz3.so*' '/usr/lib/x86_64-linux-gnu/libmfxhw64.so*' \
      '/usr/lib/x86_64-linux-gnu/mfx/*' '/usr/share/proj/*' \
      '/usr/lib/x86_64-linux-gnu/libtorch_python.so*' > /etc/dpkg/dpkg.cfg.d/alexnet-unused \
 && apt-get update \
 && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) \
      libopenblas0-openmp dataset-fashion-mnist \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=cpu-build /staging/usr/local/bin/alexnet /usr/local/bin/alexnet
# A missing shared library fails the build here rather than the first run.
RUN alexnet --help > /dev/null
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin alexnet \
 && mkdir /out \
 && chown alexnet:alexnet /out
USER alexnet
WORKDIR /out
VOLUME /out
# alexnet serve's default port (it needs --host 0.0.0.0 to be reached from outside the container).
# Its management port (8081, POST /reload) stays on the container's loopback and is not exposed.
EXPOSE 8080
ENTRYPOINT ["alexnet"]
CMD ["--help"]
ARG VERSION=0.1.0
ARG SOURCE=
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="alexnet" \
      org.opencontainers.image.description="torchvision's AlexNet in C++/LibTorch: train, eval, predict, serve, info, export, bench; CPU build" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}"
