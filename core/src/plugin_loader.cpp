#include "plugin_loader.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <system_error>

#include <boost/dll/runtime_symbol_info.hpp>

namespace certfleet {
namespace fs = std::filesystem;

namespace {

Status loadError(const fs::path& path, const std::string& message) {
  return failedPrecondition("plugin " + path.string() + ": " + message);
}

std::string stageFolder(Stage stage) {
  return stageName(stage);
}

}  // namespace

LoadedPlugin::LoadedPlugin(fs::path path,
                           std::shared_ptr<boost::dll::shared_library> library,
                           const PluginDescriptor& descriptor,
                           Plugin* instance)
    : path_(std::move(path)),
      library_(std::move(library)),
      name_(descriptor.name),
      stage_(descriptor.stage),
      version_(descriptor.version != nullptr ? descriptor.version : ""),
      destroy_(descriptor.destroy),
      instance_(instance) {}

LoadedPlugin::~LoadedPlugin() {
  // The instance's code lives in the library: destroy it before the library goes.
  if (instance_ != nullptr && destroy_ != nullptr) {
    destroy_(instance_);
  }
}

PluginLoader::PluginLoader(std::vector<fs::path> directories)
    : directories_(std::move(directories)) {}

std::vector<fs::path> PluginLoader::defaultDirectories(const std::vector<std::string>& extra) {
  std::vector<fs::path> directories(extra.begin(), extra.end());

  if (const char* from_environment = std::getenv("CERTFLEET_PLUGIN_PATH")) {
    std::string list = from_environment;
    std::size_t start = 0;
    while (start <= list.size()) {
      std::size_t end = list.find(':', start);
      std::string entry = list.substr(start, end - start);
      if (!entry.empty()) {
        directories.emplace_back(entry);
      }
      if (end == std::string::npos) {
        break;
      }
      start = end + 1;
    }
  }

  // Beside the executable: bin/../plugins in a build tree, bin/../lib/... once installed.
  boost::system::error_code error;
  auto program = boost::dll::program_location(error);
  if (!error) {
    fs::path prefix = fs::path(program.string()).parent_path().parent_path();
    for (const fs::path& candidate :
         {prefix / "plugins", prefix / CERTFLEET_PLUGIN_INSTALL_SUBDIR}) {
      std::error_code exists_error;
      if (fs::is_directory(candidate, exists_error)) {
        directories.push_back(candidate);
      }
    }
  }
  return directories;
}

Result<std::unique_ptr<LoadedPlugin>> PluginLoader::loadFile(const fs::path& path) {
  auto library = std::make_shared<boost::dll::shared_library>();
  try {
    boost::dll::fs::error_code error;
    library->load(path.string(), error,
                  boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    if (error) {
      const char* reason = ::dlerror();
      return loadError(
          path, std::string("cannot load: ") + (reason != nullptr ? reason : error.message()));
    }
    if (!library->has(kPluginEntrySymbol)) {
      return loadError(path, std::string("no entry symbol '") + kPluginEntrySymbol +
                                 "': not a certfleet plugin");
    }
    auto& entry = library->get_alias<PluginEntryPoint>(kPluginEntrySymbol);
    const PluginDescriptor* descriptor = entry();
    if (descriptor == nullptr) {
      return loadError(path, "entry symbol returned no descriptor");
    }
    // Nothing but the first field can be trusted until the versions agree.
    if (descriptor->abi_version != kAbiVersion) {
      return loadError(path, "built for plugin ABI " + std::to_string(descriptor->abi_version) +
                                 ", this certfleet speaks ABI " + std::to_string(kAbiVersion) +
                                 ": rebuild the plugin against this SDK");
    }
    if (descriptor->name == nullptr || descriptor->create == nullptr ||
        descriptor->destroy == nullptr) {
      return loadError(path, "descriptor lacks a name or factory");
    }
    Plugin* instance = descriptor->create();
    if (instance == nullptr) {
      return loadError(
          path, std::string("factory of '") + descriptor->name + "' failed to create the plugin");
    }
    return std::make_unique<LoadedPlugin>(path, std::move(library), *descriptor, instance);
  } catch (const std::exception& exception) {
    return loadError(path, exception.what());
  }
}

Result<std::unique_ptr<LoadedPlugin>> PluginLoader::load(Stage stage,
                                                         const std::string& name) const {
  std::string file_name = stageFolder(stage) + "-" + name + ".so";
  std::vector<fs::path> found;
  for (const fs::path& directory : directories_) {
    std::error_code error;
    fs::path candidate = directory / file_name;
    if (!fs::exists(candidate, error)) {
      continue;
    }
    fs::path canonical = fs::weakly_canonical(candidate, error);
    if (std::find(found.begin(), found.end(), canonical) == found.end()) {
      found.push_back(canonical);
    }
  }

  if (found.empty()) {
    std::string searched;
    for (const fs::path& directory : directories_) {
      searched += (searched.empty() ? "" : ", ") + directory.string();
    }
    return notFound(std::string(stageName(stage)) + " plugin '" + name + "' not found: no " +
                    file_name + " in " + (searched.empty() ? "(no plugin directory)" : searched));
  }
  if (found.size() > 1) {
    return loadError(found[1], "duplicate of " + found[0].string() + " for " + stageName(stage) +
                                   " plugin '" + name + "': remove one or narrow the plugin path");
  }

  Result<std::unique_ptr<LoadedPlugin>> loaded = loadFile(found[0]);
  if (!loaded.ok()) {
    return loaded.status();
  }
  const LoadedPlugin& plugin = **loaded;
  if (plugin.stage() != stage) {
    return loadError(plugin.path(), std::string("declares stage '") + stageName(plugin.stage()) +
                                        "', expected '" + stageName(stage) + "'");
  }
  if (plugin.name() != name) {
    return loadError(plugin.path(),
                     "declares name '" + plugin.name() + "', expected '" + name + "'");
  }
  return loaded;
}

std::vector<PluginListing> PluginLoader::list() const {
  std::vector<PluginListing> listings;
  for (const fs::path& directory : directories_) {
    std::error_code error;
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(directory, error)) {
      if (entry.path().extension() == ".so") {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) {
      PluginListing listing;
      listing.path = file;
      Result<std::unique_ptr<LoadedPlugin>> loaded = loadFile(file);
      if (!loaded.ok()) {
        listing.error = loaded.status().message();
      } else {
        listing.name = (*loaded)->name();
        listing.stage = stageName((*loaded)->stage());
        listing.version = (*loaded)->version();
        listing.abi_version = kAbiVersion;
        std::string expected = listing.stage + "-" + listing.name + ".so";
        if (file.filename() != expected) {
          listing.error = "file should be named " + expected + " to be found";
        }
      }
      listings.push_back(std::move(listing));
    }
  }
  return listings;
}

}  // namespace certfleet
