//! Generates the gRPC service code of the SPIFFE Workload API with tonic-build's manual
//! builder: no `.proto` file and no `protoc` are needed. The message types are written by
//! hand in `src/proto.rs`, with the field numbers of the official `workload.proto`.

fn method(name: &str, route: &str, input: &str, output: &str) -> tonic_build::manual::Method {
    tonic_build::manual::Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::proto::{input}"))
        .output_type(format!("crate::proto::{output}"))
        .codec_path("tonic_prost::ProstCodec")
        .server_streaming()
        .build()
}

fn main() {
    // The official service has no proto package: routes are `/SpiffeWorkloadAPI/<Method>`.
    let service = tonic_build::manual::Service::builder()
        .name("SpiffeWorkloadAPI")
        .package("")
        .method(method(
            "fetch_x509_svid",
            "FetchX509SVID",
            "X509SvidRequest",
            "X509SvidResponse",
        ))
        .method(method(
            "fetch_x509_bundles",
            "FetchX509Bundles",
            "X509BundlesRequest",
            "X509BundlesResponse",
        ))
        .build();
    tonic_build::manual::Builder::new()
        .build_transport(false)
        .compile(&[service]);
    println!("cargo:rerun-if-changed=build.rs");
}
