// Finds plugins by stage and name in the plugin directories and loads them with
// Boost.DLL, refusing anything that is not exactly what the pipeline asked for.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <boost/dll/shared_library.hpp>

#include "certfleet/plugin.hpp"

namespace certfleet {

// A loaded plugin: the library stays loaded as long as this object lives.
class LoadedPlugin {
 public:
  LoadedPlugin(std::filesystem::path path,
               std::shared_ptr<boost::dll::shared_library> library,
               const PluginDescriptor& descriptor,
               Plugin* instance);
  ~LoadedPlugin();
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::string& name() const { return name_; }
  Stage stage() const { return stage_; }
  const std::string& version() const { return version_; }
  Plugin& instance() const { return *instance_; }

  // The instance as its stage interface, or nullptr if the class does not implement it.
  template <typename Interface>
  Interface* as() const {
    return dynamic_cast<Interface*>(instance_);
  }

 private:
  std::filesystem::path path_;
  std::shared_ptr<boost::dll::shared_library> library_;
  std::string name_;
  Stage stage_;
  std::string version_;
  void (*destroy_)(Plugin*) noexcept;
  Plugin* instance_;
};

// What `certfleet plugins` shows for one file.
struct PluginListing {
  std::filesystem::path path;
  std::string name;
  std::string stage;
  std::string version;
  std::uint32_t abi_version = 0;
  std::string error;  // empty when the plugin loads cleanly
};

class PluginLoader {
 public:
  explicit PluginLoader(std::vector<std::filesystem::path> directories);

  // --plugin-dir values first, then CERTFLEET_PLUGIN_PATH (colon separated), then the
  // folders beside the running executable (build tree, then install tree).
  static std::vector<std::filesystem::path> defaultDirectories(
      const std::vector<std::string>& extra);

  // Loads the plugin `<stage>-<name>.so` from the one directory that has it. A missing
  // file, a second copy in another directory, a missing entry symbol, another ABI
  // version, another stage or name than asked, or a failing factory each give a
  // one-line error naming the file.
  Result<std::unique_ptr<LoadedPlugin>> load(Stage stage, const std::string& name) const;

  // Loads one file without name checks (tests and `plugins`).
  static Result<std::unique_ptr<LoadedPlugin>> loadFile(const std::filesystem::path& path);

  std::vector<PluginListing> list() const;

  const std::vector<std::filesystem::path>& directories() const { return directories_; }

 private:
  std::vector<std::filesystem::path> directories_;
};

}  // namespace certfleet
