// One function per subcommand: argv excludes the program name (argv[0] is the command).
#pragma once

namespace alexnet::app {

int run_predict(int argc, const char* const* argv);
int run_info(int argc, const char* const* argv);
int run_export(int argc, const char* const* argv);
int run_train(int argc, const char* const* argv);
int run_eval(int argc, const char* const* argv);
int run_bench(int argc, const char* const* argv);
int run_serve(int argc, const char* const* argv);

}  // namespace alexnet::app
