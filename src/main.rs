//! The `wharf` command line: parse flags, load the config, start logging
//! (text or JSON lines, as the config says), and run the server or a
//! maintenance command (on a data directory, or on a running server).

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use wharf::config::{Config, LogFormat, ServeArgs};

/// Wharf: a pull-through caching mirror and registry for OCI content.
///
/// Every setting is a flag, an environment variable (WHARF_*) and a key in
/// an optional TOML config file; with none of them Wharf runs on embedded
/// defaults. Log verbosity follows WHARF_LOG (e.g. debug, wharf=trace).
#[derive(Parser)]
#[command(name = "wharf", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server (listens on 0.0.0.0:5000, data in ./wharf-data by default).
    Serve(Box<ServeArgs>),
    /// Remove local blobs no manifest references (the server also does this
    /// on a schedule). Works on a data directory no server is using, or with
    /// --server on a running server.
    Gc(GcArgs),
    /// Re-hash every blob and check the index and files against each other.
    /// Exits 1 when anything is wrong. Works on a data directory no server is
    /// using, or with --server on a running server.
    Verify(VerifyArgs),
    /// Pull images through a running Wharf so they are cached: every
    /// platform of an index (or those given), configs and layers, and with
    /// --referrers their signatures and SBOMs. Exits 1 if any failed, 2 on
    /// bad input.
    Prefetch(PrefetchArgs),
    /// Write images pulled through a running Wharf into one tar holding an
    /// OCI image layout (for an air-gapped site; `skopeo copy
    /// oci-archive:BUNDLE:REF` reads it too), every blob checked on the way
    /// out. --exclude leaves out what the receiving site already has.
    Export(ExportArgs),
    /// List every digest a Wharf holds (a data directory no server is using,
    /// or with --server a running one), as JSON for `wharf export
    /// --exclude` at the sending site.
    Inventory(InventoryArgs),
    /// Read a bundle (from `wharf export`, or any OCI image layout as a tar)
    /// into a Wharf: a data directory no server is using, or with --server a
    /// running one. Every blob is checked against its digest and every
    /// manifest against what references it before anything is served;
    /// upstreams' images are then served as if pulled through the mirror
    /// (offline too), local names as if pushed. A bundle with anything wrong
    /// is refused whole.
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The bundle to read.
    #[arg(value_name = "BUNDLE.tar")]
    bundle: std::path::PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
struct InventoryArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Where to write it (- for standard output).
    #[arg(short = 'o', long = "output", value_name = "HAVE.json")]
    output: std::path::PathBuf,
}

#[derive(clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    pick: PrefetchArgs,
    /// The bundle to write (it must not exist; written beside it as
    /// BUNDLE.partial and renamed when complete).
    #[arg(short = 'o', long = "output", value_name = "BUNDLE.tar")]
    output: std::path::PathBuf,
    /// An inventory of the receiving site (JSON: {"digests": [...]}):
    /// blobs it lists are left out of the bundle.
    #[arg(long, value_name = "HAVE.json")]
    exclude: Option<std::path::PathBuf>,
    /// Continue BUNDLE.partial, left by an interrupted run: its complete
    /// entries that still match their digests are kept, the rest fetched.
    /// Without it, BUNDLE.partial is started again.
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
struct PrefetchArgs {
    /// Images as you would pull them: alpine:3.20, ghcr.io/org/app:1.2,
    /// docker.io/library/nginx@sha256:...
    #[arg(value_name = "REF")]
    refs: Vec<String>,
    /// A file of references, one per line (# starts a comment).
    #[arg(long, value_name = "LIST")]
    file: Option<std::path::PathBuf>,
    /// Only these platforms of an index (os/arch or os/arch/variant;
    /// repeatable) [default: all of them].
    #[arg(long, value_name = "OS/ARCH", conflicts_with = "all_platforms")]
    platform: Vec<String>,
    /// Every platform of an index (the default).
    #[arg(long)]
    all_platforms: bool,
    /// Also what refers to each manifest (signatures, SBOMs: the OCI
    /// referrers API).
    #[arg(long)]
    referrers: bool,
    #[command(flatten)]
    server: ServerArgs,
}

impl PrefetchArgs {
    /// The references and options, or what is wrong with them.
    fn read(
        &self,
    ) -> Result<
        (
            Vec<wharf::oci::image_ref::ImageRef>,
            wharf::prefetch::Options,
        ),
        String,
    > {
        let mut refs = self
            .refs
            .iter()
            .map(|r| wharf::oci::image_ref::ImageRef::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(f) = &self.file {
            let text =
                std::fs::read_to_string(f).map_err(|e| format!("--file {}: {e}", f.display()))?;
            refs.extend(
                wharf::oci::image_ref::read_list(&text)
                    .map_err(|e| format!("--file {}: {e}", f.display()))?,
            );
        }
        if refs.is_empty() {
            return Err("nothing to prefetch: give references, or --file LIST".into());
        }
        if self.server.server.is_none() {
            return Err("this pulls through a running Wharf: give --server URL".into());
        }
        let platforms = self
            .platform
            .iter()
            .map(|p| wharf::oci::image_ref::Platform::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            refs,
            wharf::prefetch::Options {
                platforms,
                referrers: self.referrers,
            },
        ))
    }
}

/// Which data directory a maintenance command works on.
#[derive(clap::Args)]
struct DataArgs {
    /// Config file to read `data` from.
    #[arg(long, env = "WHARF_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// The data directory [default: ./wharf-data].
    #[arg(long, env = "WHARF_DATA", value_name = "DIR")]
    data: Option<std::path::PathBuf>,
    /// Where durable state lives (with s3, the bucket is what is checked).
    #[command(flatten)]
    storage: wharf::config::StorageArgs,
}

/// A running server to work on instead of a data directory.
#[derive(clap::Args)]
struct ServerArgs {
    /// The running Wharf to work with, e.g. https://wharf.example.com:5000
    /// (gc, verify, inventory and import use its /admin/ endpoints, for the
    /// users in its `admins`; prefetch and export pull through it).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The user to log in to the server as; the password comes from
    /// WHARF_PASSWORD or --password-file.
    #[arg(long, env = "WHARF_USER", value_name = "NAME")]
    user: Option<String>,
    /// A file holding the user's password.
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) trusted for the server's HTTPS, on top of the
    /// public roots.
    #[arg(long, value_name = "FILE", requires = "server")]
    ca_file: Option<std::path::PathBuf>,
}

impl ServerArgs {
    /// The client of `--server`, if given.
    fn client(&self) -> Result<Option<wharf::client::ServerClient>, String> {
        let Some(url) = &self.server else {
            return Ok(None);
        };
        let password = match (&self.password_file, std::env::var("WHARF_PASSWORD")) {
            (Some(f), _) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("--password-file {}: {e}", f.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, Ok(p)) => Some(p),
            (None, Err(_)) => None,
        };
        wharf::client::ServerClient::new(
            url,
            self.user.as_deref(),
            password.as_deref(),
            self.ca_file.as_deref(),
        )
        .map(Some)
    }
}

#[derive(clap::Args)]
struct GcArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// List what would be removed, and the bytes freed, and what is kept
    /// only because of the grace period, without removing anything.
    #[arg(long)]
    dry_run: bool,
    /// Only blobs unused for this long are removed. Default: on a data
    /// directory of --storage fs, none (no server is using it, so no push
    /// can be in progress); with --storage s3 (other servers may use the
    /// bucket) and on a running server, the gc_grace setting (1h).
    #[arg(long, value_name = "DURATION")]
    grace: Option<String>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Move corrupt and orphaned blobs aside (to DATA/quarantine/, or with
    /// --storage s3 to quarantine/ in the bucket) and drop the records
    /// pointing at missing or corrupt content (the mirror then fetches it
    /// again). Only on a data directory (a stopped server).
    #[arg(long, conflicts_with = "server")]
    repair: bool,
}

/// Loads the config a maintenance command needs, or exits with the error.
fn maintenance_config(data: &DataArgs) -> Result<Config, ExitCode> {
    let args = ServeArgs {
        config: data.config.clone(),
        data: data.data.clone(),
        storage: data.storage.clone(),
        ..Default::default()
    };
    Config::load(&args).map_err(|e| {
        eprintln!("wharf: {e}");
        ExitCode::from(2)
    })
}

/// Starts logging to standard error; WHARF_LOG picks the lines.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields at the top level, beside timestamp, level,
        // target and message.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The config first: it says how to log (loading it logs nothing).
    let config = match &cli.command {
        Command::Serve(args) => Config::load(args).map_err(|e| {
            eprintln!("wharf: {e}");
            ExitCode::from(2)
        }),
        Command::Gc(args) => maintenance_config(&args.data),
        Command::Verify(args) => maintenance_config(&args.data),
        Command::Inventory(args) => maintenance_config(&args.data),
        Command::Import(args) => maintenance_config(&args.data),
        Command::Prefetch(_) | Command::Export(_) => {
            Config::load(&ServeArgs::default()).map_err(|e| {
                eprintln!("wharf: {e}");
                ExitCode::from(2)
            })
        }
    };
    let config = match config {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(config.log_format);
    let server = match &cli.command {
        Command::Gc(GcArgs { server, .. })
        | Command::Verify(VerifyArgs { server, .. })
        | Command::Inventory(InventoryArgs { server, .. })
        | Command::Import(ImportArgs { server, .. })
        | Command::Prefetch(PrefetchArgs { server, .. })
        | Command::Export(ExportArgs {
            pick: PrefetchArgs { server, .. },
            ..
        }) => server.client(),
        Command::Serve(_) => Ok(None),
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wharf: {e}");
            return ExitCode::from(2);
        }
    };
    let target = match &server {
        Some(s) => wharf::Target::Server(s),
        None => wharf::Target::Data(&config),
    };
    // A bounded blocking pool: file reads and writes run there, and every
    // extra thread is another malloc arena holding memory.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wharf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(_) => match runtime.block_on(wharf::serve(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wharf: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Gc(args) => {
            let grace = match args.grace.as_deref().map(humantime::parse_duration) {
                Some(Ok(g)) => Some(g),
                Some(Err(_)) => {
                    eprintln!("wharf: --grace: expected a duration, e.g. 0s, 30m, 1h");
                    return ExitCode::from(2);
                }
                // Nothing can be in flight on a data directory no server uses.
                None if server.is_none()
                    && matches!(config.storage, wharf::config::Storage::Fs) =>
                {
                    Some(std::time::Duration::ZERO)
                }
                None => None,
            };
            match runtime.block_on(wharf::gc(target, args.dry_run, grace)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Prefetch(args) => {
            let (refs, opts) = match args.read() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some(client) = &server else {
                return ExitCode::from(2);
            };
            let progress = wharf::prefetch::Progress::new("prefetch", refs.len());
            let (totals, failures) =
                runtime.block_on(wharf::prefetch::run(client, &refs, &opts, &progress));
            for line in wharf::prefetch::summary(&totals, refs.len(), &failures) {
                println!("{line}");
            }
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Inventory(args) => {
            match runtime.block_on(wharf::inventory(target, &args.output)) {
                Ok(n) => {
                    if args.output != std::path::Path::new("-") {
                        println!("wrote {}: {n} digests", args.output.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wharf: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Import(args) => match runtime.block_on(wharf::import(target, &args.bundle)) {
            Ok(r) => {
                for image in &r.images {
                    println!("imported {image}");
                }
                println!(
                    "{}: {} images, {} manifests, {} blobs; {} new here ({} bytes){}",
                    args.bundle.display(),
                    r.images.len(),
                    r.manifests,
                    r.blobs,
                    r.new_blobs,
                    r.new_bytes,
                    if r.left_out > 0 {
                        format!("; {} platforms of an index were not in the bundle (pulls of them are not served)", r.left_out)
                    } else {
                        String::new()
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wharf: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Export(args) => {
            let read = args.pick.read().and_then(|(refs, o)| {
                if args.output.exists() {
                    return Err(format!(
                        "{} exists: remove it, or write the bundle under another name",
                        args.output.display()
                    ));
                }
                let exclude = match &args.exclude {
                    Some(f) => std::fs::read_to_string(f)
                        .map_err(|e| e.to_string())
                        .and_then(|t| wharf::bundle::read_inventory(&t))
                        .map_err(|e| format!("--exclude {}: {e}", f.display()))?,
                    None => Default::default(),
                };
                Ok((
                    refs,
                    wharf::bundle::ExportOptions {
                        platforms: o.platforms,
                        referrers: o.referrers,
                        exclude,
                        resume: args.resume,
                    },
                ))
            });
            let (refs, opts) = match read {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some(client) = &server else {
                return ExitCode::from(2);
            };
            let progress = wharf::prefetch::Progress::new("export", refs.len());
            match runtime.block_on(wharf::bundle::export(
                client,
                &refs,
                &opts,
                &args.output,
                &progress,
            )) {
                Ok(r) => {
                    println!(
                        "wrote {}: {} images, {} manifests, {} blobs, {} bytes; left out {} blobs ({} bytes) the receiving site has{}",
                        args.output.display(),
                        r.images,
                        r.manifests,
                        r.blobs,
                        r.bytes,
                        r.excluded,
                        r.excluded_bytes,
                        if r.resumed > 0 {
                            format!("; kept {} manifests and blobs from the interrupted run", r.resumed)
                        } else {
                            String::new()
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wharf: export failed, nothing written: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify(args) => match runtime.block_on(wharf::verify(target, args.repair)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("wharf: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
